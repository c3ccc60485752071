"""Dashboard page queries at scale: the time of every query each page runs, uncached, at N events
(default 1 M) against a baseline lake of one copy of the real data (59,328 events) built and
measured in the same run.

Lakes are built with :mod:`bench.kpi_bench` (real replayed events re-keyed per copy, shifted one
day per copy) and their KPI tables materialised with ``KpiMaintainer.rebuild`` (in a child
process, so its peak RSS is its own). The queries of each lake run in a child process of their own
on a fresh :class:`dashboards.lake.DashboardLake` (peak RSS = what a dashboard process needs),
under three global filters: all time, and custom 30-day ranges at the last and at the first
days of data (the dense end and a sparse slice).

Per query: cold = the first call, warm = the best of 3 more (``--repeats``). A page's query time
(uncached) is the sum of its queries; the sidebar's ``dimension_values`` runs on every page and is
added to each page's total. Where a page's widgets pick one of several variants of a query (comment
search, answers signal and day), the total counts every variant and a second total, the "default
view", only the one the page opens with. Target: every page's total < 1 s at 1 M events (warm).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.kpi_bench import base_tables, build_lake  # noqa: E402
from feedback.config import HomeSettings, KpiSettings, LakeSettings  # noqa: E402
from feedback.lake.catalog import open_catalog  # noqa: E402

BASELINE_EVENTS = 59_328  # one copy of the real data
TARGET_S = 1.0
WARM_REPEATS = 3
PAGES = ("sidebar", "overview", "models", "feedback", "conversations", "cost", "health")
# Other settings of a page's widgets (search, signal, day): a view runs one of them, not all. A page's
# total counts them all; its "default view" total (the page as it opens) leaves them out.
ALTERNATIVES = {("feedback", "comments('answer', 0-0.5, rated)"), ("conversations", "answers(thumb_down)"),
                ("conversations", "answers(low_rating, day)")}
# dashboards/views/overview.py
TILES = ["interactions", "feedback_coverage", "positive_rate", "thumbs_up_rate", "mean_rating",
         "negative_comment_share", "thumb_coverage", "rating_coverage"]


def peak_rss_mb() -> int:
    """This process's peak RSS in MB. ``VmHWM``, not ``ru_maxrss``: a child started with
    fork+exec inherits its parent's ``ru_maxrss``, so that would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def page_queries() -> list[tuple[str, str, Callable[[Any, Any, Any, dict], Any]]]:
    """(page, label, call(lake, filters, kpi settings, context)) in the order the pages run them.
    ``context`` carries the day for the low-rating drill-down and the conversation answers(all) found."""
    from dashboards import queries as q

    def answers_all(lake, f, kpi, ctx):
        frame, total = q.answers(lake, f, kpi, "all", None, 200)
        if len(frame):
            ctx["conversation_id"] = frame["conversation_id"].iloc[0]
        return frame, total

    def series(name, by=None):
        return lambda lake, f, kpi, ctx: q.series(lake, name, f, kpi, by=by)

    def by_group(name, by):
        return lambda lake, f, kpi, ctx: q.by_group(lake, name, f, kpi, by)

    dimension_values = lambda lake, f, kpi, ctx: q.dimension_values(lake)  # noqa: E731
    return [
        ("sidebar", "dimension_values", dimension_values),
        ("overview", "tiles(8 KPIs)", lambda lake, f, kpi, ctx: q.tiles(lake, TILES, f, kpi)),
        ("overview", "series(interactions, by=app)", series("interactions", "app")),
        *[("overview", f"series({n})", series(n)) for n in ("thumbs_up_rate", "mean_rating", "feedback_coverage")],
        ("overview", "by_group(thumbs_up_rate, model)", by_group("thumbs_up_rate", "model")),
        ("models", "dimension_values", dimension_values),
        ("models", "by_group(win_rate, model)", by_group("win_rate", "model")),
        ("models", "compare(win_rate, tulu_7B, tulu_65B)",
         lambda lake, f, kpi, ctx: q.compare(lake, "win_rate", "model", "tulu_7B", "tulu_65B", f, kpi)),
        ("feedback", "thumbs", lambda lake, f, kpi, ctx: q.thumbs(lake, f, kpi)),
        ("feedback", "rating_distribution", lambda lake, f, kpi, ctx: q.rating_distribution(lake, f)),
        ("feedback", "comments(all)", lambda lake, f, kpi, ctx: q.comments(lake, f, "", 0.0, 1.0, True, 200)),
        ("feedback", "comments('answer', 0-0.5, rated)",
         lambda lake, f, kpi, ctx: q.comments(lake, f, "answer", 0.0, 0.5, False, 200)),
        ("feedback", "complaint_terms(20)", lambda lake, f, kpi, ctx: q.complaint_terms(lake, f, kpi, 20)),
        ("conversations", "answers(all)", answers_all),
        ("conversations", "answers(thumb_down)",
         lambda lake, f, kpi, ctx: q.answers(lake, f, kpi, "thumb_down", None, 200)),
        ("conversations", "answers(low_rating, day)",
         lambda lake, f, kpi, ctx: q.answers(lake, f, kpi, "low_rating", ctx["day"], 200)),
        ("conversations", "transcript", lambda lake, f, kpi, ctx: q.transcript(lake, ctx["conversation_id"])),
        ("cost", "token_provenance", lambda lake, f, kpi, ctx: q.token_provenance(lake, f)),
        *[("cost", f"series({n})", series(n)) for n in ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms",
                                                        "ttft_p50_ms", "ttft_p95_ms", "tokens_in", "tokens_out")],
        *[("cost", f"by_group({n}, model)", by_group(n, "model"))
          for n in ("cost_usd", "cost_per_positive_answer_usd")],
        ("health", "events_per_topic", lambda lake, f, kpi, ctx: q.events_per_topic(lake)),
        ("health", "quarantine_by_reason", lambda lake, f, kpi, ctx: q.quarantine_by_reason(lake)),
        ("health", "ingestion_rate", lambda lake, f, kpi, ctx: q.ingestion_rate(lake)),
    ]


def _rows(result: Any) -> int | None:
    """Rows of a query's answer (for the record: a sanity check that the query found data)."""
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], int):
        return result[1]  # (newest rows, how many match)
    if hasattr(result, "interactions"):
        return len(result.interactions) + len(result.feedback)
    if isinstance(result, dict):
        return sum(len(v) if isinstance(v, list) else 1 for v in result.values())
    try:
        return len(result)
    except TypeError:
        return 1


def _filters(lake) -> dict:
    """All time, and two custom 30-day ranges (UTC dates, ``to`` inclusive): the last 30 days of
    data (the dense end: the shifted copies of hh_rlhf and feedbackqa) and the first 30 days (a
    sparse slice: oasst1 only), as the URL would carry them."""
    from dashboards.filters import GlobalFilters

    span = lake.df("SELECT min(occurred_at) AS lo, max(occurred_at) AS hi FROM interactions").iloc[0]
    first, last = span["lo"].date(), span["hi"].date()
    return {
        "all": GlobalFilters.from_query({}),
        "last_30d": GlobalFilters.from_query({"range": "custom", "from": (last - timedelta(days=29)).isoformat(),
                                              "to": last.isoformat()}),
        "first_30d": GlobalFilters.from_query({"range": "custom", "from": first.isoformat(),
                                               "to": (first + timedelta(days=29)).isoformat()}),
    }


def phase_queries(home: Path) -> None:
    """In a child process: time every page query on the lake under ``home``; print JSON."""
    from dashboards.lake import DashboardLake

    catalog = open_catalog(LakeSettings(), HomeSettings(home=home))
    kpi = KpiSettings()
    t = time.perf_counter()
    lake = DashboardLake(catalog, LakeSettings(), kpi)
    lake.sync(force=True)
    open_s = time.perf_counter() - t
    counts = {name: int(lake.df(f"SELECT count(*) AS n FROM {name}")["n"].iloc[0])
              for name in ("interactions", "feedback")}
    timings, described = [], {}
    for fname, f in _filters(lake).items():
        where = "occurred_at >= ? AND occurred_at < ?" if f.start else "TRUE"
        params = [f.start, f.end] if f.start else []
        n = int(lake.df(f"SELECT count(*) AS n FROM interactions WHERE {where}", params)["n"].iloc[0])
        day = lake.df(f"""SELECT CAST(date_trunc('day', occurred_at) AS DATE) AS d, count(*) AS n FROM interactions
                          WHERE {where} GROUP BY 1 ORDER BY n DESC, d LIMIT 1""", params)["d"].iloc[0]
        day = str(day)[:10]
        ctx = {"day": day, "conversation_id": ""}  # the busiest day of the range; answers(all) sets the conversation
        described[fname] = {"range": f.describe(), "answers": n, "low_rating_day": day}
        for page, label, call in page_queries():
            t, c = time.perf_counter(), time.process_time()
            result = call(lake, f, kpi, ctx)
            cold, cold_cpu = time.perf_counter() - t, time.process_time() - c
            warm, warm_cpu = [], []
            for _ in range(WARM_REPEATS):
                t, c = time.perf_counter(), time.process_time()
                call(lake, f, kpi, ctx)
                warm.append(time.perf_counter() - t)
                warm_cpu.append(time.process_time() - c)
            timings.append({"filter": fname, "page": page, "query": label, "cold_s": round(cold, 4),
                            "warm_s": round(min(warm), 4), "cold_cpu_s": round(cold_cpu, 4),
                            "warm_cpu_s": round(min(warm_cpu), 4), "rows": _rows(result)})
        described[fname]["transcript_conversation_id"] = ctx["conversation_id"]
    print(json.dumps({"open_sync_s": round(open_s, 3), "rows": counts, "filters": described,
                      "peak_rss_mb": peak_rss_mb(), "timings": timings}))


def phase_rebuild(home: Path) -> None:
    """In a child process: materialise the KPI tables of the lake under ``home``; print JSON."""
    from feedback.kpi.maintainer import KpiMaintainer

    catalog = open_catalog(LakeSettings(), HomeSettings(home=home))
    t = time.perf_counter()
    r = KpiMaintainer(catalog, LakeSettings(), KpiSettings()).rebuild()
    print(json.dumps({"rebuild_s": round(time.perf_counter() - t, 2), "peak_rss_mb": peak_rss_mb(), "rows": r.rows}))


def in_child(phase: str, home: Path) -> dict:
    command = [sys.executable, __file__, "--phase", phase, "--home", str(home), "--repeats", str(WARM_REPEATS)]
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode:
        sys.stderr.write(out.stderr)
        raise SystemExit(f"{phase} failed on {home}")
    return json.loads(out.stdout.strip().splitlines()[-1])


COLUMNS = ("cold_s", "warm_s", "warm_cpu_s")


def _line(page: str, label: str, base: dict, large: dict, verdict: str = "") -> str:
    ratio = large["warm_s"] / base["warm_s"] if base["warm_s"] else float("nan")
    return (f"{page:<14} {label:<46} {base['cold_s']:>9.3f} {base['warm_s']:>9.3f} {large['cold_s']:>9.3f} "
            f"{large['warm_s']:>9.3f} {ratio:>6.1f} {large['warm_cpu_s']:>8.3f}  {verdict}").rstrip()


def _sum(timings: dict, keys: list) -> dict:
    return {c: round(sum(timings[k][c] for k in keys), 4) for c in COLUMNS}


def report(results: dict) -> str:
    """The table: per filter, every query and per page the sum, baseline vs large, PASS/FAIL.
    Also stores the page totals in ``results["pages"]``."""
    base, large = results["baseline"], results["large"]
    big = f"{large['events'] / 1e6:.2g}M"
    head = (f"{'page':<14} {'query':<46} {'base cold':>9} {'base warm':>9} {big + ' cold':>9} {big + ' warm':>9} "
            f"{'ratio':>6} {big + ' cpu':>8}  result")
    lines = [f"times in s; cold = first call, warm = best of {WARM_REPEATS} more; ratio = large warm / baseline warm; "
             f"cpu = process CPU time of the large warm call (DuckDB runs on every core, so it can exceed the wall "
             f"time; wall far above cpu / cores means other processes took the CPU); baseline {base['events']:,} "
             f"events, large {large['events']:,} events"]
    results["pages"] = {}
    for fname, desc in large["queries"]["filters"].items():
        bdesc = base["queries"]["filters"][fname]
        lines += ["", f"filter {fname} ({desc['range']}): baseline {bdesc['answers']:,} answers in range, large "
                  f"{desc['answers']:,}; low_rating day {bdesc['low_rating_day']} / {desc['low_rating_day']}",
                  head, "-" * len(head)]
        b = {(r["page"], r["query"]): r for r in base["queries"]["timings"] if r["filter"] == fname}
        g = {(r["page"], r["query"]): r for r in large["queries"]["timings"] if r["filter"] == fname}
        sidebar = [k for k in g if k[0] == "sidebar"]
        sums = results["pages"][fname] = {}
        for page in PAGES:
            keys = [k for k in g if k[0] == page]
            lines += [_line(page, k[1], b[k], g[k], "> 1 s" if g[k]["warm_s"] >= TARGET_S else "") for k in keys]
            counted = keys + (sidebar if page != "sidebar" else [])  # the sidebar's query runs on every page
            totals = {"page total": counted}
            if any(k in ALTERNATIVES for k in keys):
                totals["default view"] = [k for k in counted if k not in ALTERNATIVES]
            for name, ks in totals.items():
                entry = {"baseline": _sum(b, ks), "large": _sum(g, ks)}
                entry["pass"] = entry["large"]["warm_s"] < TARGET_S
                sums[page] = entry if name == "page total" else {**sums[page], "default_view": entry}
                label = f"= {name}" + (" (+ sidebar)" if page != "sidebar" else "")
                lines.append(_line(page, label, entry["baseline"], entry["large"], "PASS" if entry["pass"] else "FAIL"))
            lines.append("")
    for key in ("baseline", "large"):
        r = results[key]
        lines.append(f"{key:<8} {r['events']:>9,} events: lake build {r['build_s']} s, KPI rebuild {r['rebuild_s']} s "
                     f"(peak RSS {r['rebuild_peak_rss_mb']} MB), dashboard open+sync {r['queries']['open_sync_s']} s, "
                     f"query process peak RSS {r['queries']['peak_rss_mb']} MB")
    pages = [(f"{page} ({fname})", v) for fname, sums in results["pages"].items() for page, v in sums.items()]
    failed = [name for name, v in pages if not v["pass"]]
    failed_view = [name for name, v in pages if not v.get("default_view", v)["pass"]]
    load = {k: "/".join(f"{x:.2f}" for x in results[k]) for k in ("load_avg_at_start", "load_avg_at_end")}
    lines += [f"{results['cpus']} CPUs; load average (1/5/15 min) at start {load['load_avg_at_start']}, at end "
              f"{load['load_avg_at_end']} (other processes running make the timings noisy); bench process peak RSS "
              f"{results['bench_peak_rss_mb']} MB",
              f"target: every page total < {TARGET_S:g} s warm at {big}: "
              + ("PASS" if not failed else "FAIL: " + ", ".join(failed)),
              "pages as they open (default view): "
              + ("PASS" if not failed_view else "FAIL: " + ", ".join(failed_view))]
    return "\n".join(lines)


def measure(home: Path, n_events: int, base: dict) -> dict:
    info = build_lake(home, n_events, base)
    rebuilt = in_child("rebuild", home)
    info.update({"rebuild_s": rebuilt["rebuild_s"], "rebuild_peak_rss_mb": rebuilt["peak_rss_mb"],
                 "kpi_rows": rebuilt["rows"]})
    print(f"built {info['events']:,} events in {info['build_s']} s, KPI rebuild {info['rebuild_s']} s", file=sys.stderr)
    return info


def main() -> None:
    global WARM_REPEATS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000, help="events in the large lake (default 1,000,000)")
    ap.add_argument("--repeats", type=int, default=3, help="warm calls per query, the best counts (default 3)")
    ap.add_argument("--phase", choices=["all", "rebuild", "queries"], default="all", help=argparse.SUPPRESS)
    ap.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    WARM_REPEATS = args.repeats
    if args.phase != "all":
        {"rebuild": phase_rebuild, "queries": phase_queries}[args.phase](args.home)
        return
    results: dict = {"measured_at": datetime.now(UTC).isoformat(), "target_page_s": TARGET_S,
                     "warm_repeats": WARM_REPEATS, "cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg()}
    t = time.perf_counter()
    base = base_tables()
    results["base_tables_s"] = round(time.perf_counter() - t, 1)
    with tempfile.TemporaryDirectory() as tmp:
        homes = {"baseline": Path(tmp) / "baseline", "large": Path(tmp) / "large"}
        for key, n in (("baseline", BASELINE_EVENTS), ("large", args.events)):
            results[key] = measure(homes[key], n, base)
        del base
        for key in ("baseline", "large"):
            results[key]["queries"] = in_child("queries", homes[key])
            print(f"timed the queries on {key}", file=sys.stderr)
    results["bench_peak_rss_mb"] = peak_rss_mb()
    results["load_avg_at_end"] = os.getloadavg()
    text = report(results)
    print(text)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    path = out / f"dashboard_{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nwritten {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
