"""Dashboard page queries at scale: the time of every query each page runs, uncached, at N events
(default 1 M) against a baseline lake of one copy of the real data (59,328 events) built and
measured in the same run.

Lakes are built with :mod:`bench.kpi_bench` (real replayed events re-keyed per copy, shifted one
day per copy) and their KPI tables materialised with ``KpiMaintainer.rebuild`` (in a child
process, so its peak RSS is its own). The queries of each lake run in a child process of their own
on a fresh :class:`dashboards.lake.DashboardLake` (peak RSS = what a dashboard process needs),
under three global filters: all time, and custom 30-day ranges at the last and at the first
days of data (the dense end and a sparse slice).

Per query: cold = the first call, warm = the best of 3 more. A page's query time (uncached) is the
sum of its queries; the sidebar's ``dimension_values`` runs on every page and is added to each
page's total. Target: every page's total < 1 s at 1 M events (warm).
"""

from __future__ import annotations

import argparse
import json
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
# dashboards/pages/overview.py
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
    """(page, label, call(lake, filters, kpi settings, context)) in the order the pages run them."""
    from dashboards import queries as q

    def answers_all(lake, f, kpi, ctx):
        frame, total = q.answers(lake, f, kpi, "all", None, 200)
        if len(frame):
            ctx["conversation_id"] = frame["conversation_id"].iloc[0]
        return frame, total

    out: list[tuple[str, str, Callable]] = [
        ("sidebar", "dimension_values", lambda lake, f, kpi, ctx: q.dimension_values(lake)),
        ("overview", "tiles(8 KPIs)", lambda lake, f, kpi, ctx: q.tiles(lake, TILES, f, kpi)),
        ("overview", "series(interactions, by=app)", lambda lake, f, kpi, ctx: q.series(lake, "interactions", f, kpi, by="app")),
    ]
    for name in ("thumbs_up_rate", "mean_rating", "feedback_coverage"):
        out.append(("overview", f"series({name})", lambda lake, f, kpi, ctx, n=name: q.series(lake, n, f, kpi)))
    out += [
        ("overview", "by_group(thumbs_up_rate, model)", lambda lake, f, kpi, ctx: q.by_group(lake, "thumbs_up_rate", f, kpi, "model")),
        ("models", "dimension_values", lambda lake, f, kpi, ctx: q.dimension_values(lake)),
        ("models", "by_group(win_rate, model)", lambda lake, f, kpi, ctx: q.by_group(lake, "win_rate", f, kpi, "model")),
        ("models", "compare(win_rate, tulu_7B, tulu_65B)",
         lambda lake, f, kpi, ctx: q.compare(lake, "win_rate", "model", "tulu_7B", "tulu_65B", f, kpi)),
        ("feedback", "thumbs", lambda lake, f, kpi, ctx: q.thumbs(lake, f, kpi)),
        ("feedback", "rating_distribution", lambda lake, f, kpi, ctx: q.rating_distribution(lake, f)),
        ("feedback", "comments(all)", lambda lake, f, kpi, ctx: q.comments(lake, f, "", 0.0, 1.0, True, 200)),
        ("feedback", "comments('answer', 0-0.5, rated)",
         lambda lake, f, kpi, ctx: q.comments(lake, f, "answer", 0.0, 0.5, False, 200)),
        ("feedback", "complaint_terms(20)", lambda lake, f, kpi, ctx: q.complaint_terms(lake, f, kpi, 20)),
        ("conversations", "answers(all)", answers_all),
        ("conversations", "answers(thumb_down)", lambda lake, f, kpi, ctx: q.answers(lake, f, kpi, "thumb_down", None, 200)),
        ("conversations", "answers(low_rating, day)",
         lambda lake, f, kpi, ctx: q.answers(lake, f, kpi, "low_rating", ctx["day"], 200)),
        ("conversations", "transcript", lambda lake, f, kpi, ctx: q.transcript(lake, ctx["conversation_id"])),
        ("cost", "token_provenance", lambda lake, f, kpi, ctx: q.token_provenance(lake, f)),
    ]
    for name in ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "ttft_p50_ms", "ttft_p95_ms", "tokens_in", "tokens_out"):
        out.append(("cost", f"series({name})", lambda lake, f, kpi, ctx, n=name: q.series(lake, n, f, kpi)))
    for name in ("cost_usd", "cost_per_positive_answer_usd"):
        out.append(("cost", f"by_group({name}, model)", lambda lake, f, kpi, ctx, n=name: q.by_group(lake, n, f, kpi, "model")))
    out += [
        ("health", "events_per_topic", lambda lake, f, kpi, ctx: q.events_per_topic(lake)),
        ("health", "quarantine_by_reason", lambda lake, f, kpi, ctx: q.quarantine_by_reason(lake)),
        ("health", "ingestion_rate", lambda lake, f, kpi, ctx: q.ingestion_rate(lake)),
    ]
    return out


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
    counts = {name: int(lake.df(f"SELECT count(*) AS n FROM {name}")["n"].iloc[0]) for name in ("interactions", "feedback")}
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
            t = time.perf_counter()
            result = call(lake, f, kpi, ctx)
            cold = time.perf_counter() - t
            warm = []
            for _ in range(WARM_REPEATS):
                t = time.perf_counter()
                call(lake, f, kpi, ctx)
                warm.append(time.perf_counter() - t)
            timings.append({"filter": fname, "page": page, "query": label, "cold_s": round(cold, 4),
                            "warm_s": round(min(warm), 4), "rows": _rows(result)})
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
    out = subprocess.run([sys.executable, __file__, "--phase", phase, "--home", str(home)], capture_output=True, text=True)
    if out.returncode:
        sys.stderr.write(out.stderr)
        raise SystemExit(f"{phase} failed on {home}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(results: dict) -> str:
    """The table: per filter, every query and per page the sum, baseline vs large, PASS/FAIL.
    Also stores the page totals in ``results["pages"]``."""
    base, large = results["baseline"], results["large"]
    big = f"{large['events'] / 1e6:.2g}M"
    head = (f"{'page':<14} {'query':<46} {'base cold':>9} {'base warm':>9} {big + ' cold':>9} {big + ' warm':>9} "
            f"{'ratio':>6}  result")
    lines = [f"times in s; cold = first call, warm = best of {WARM_REPEATS} more; ratio = large warm / baseline warm; "
             f"baseline {base['events']:,} events, large {large['events']:,} events"]
    for fname, desc in large["queries"]["filters"].items():
        bdesc = base["queries"]["filters"][fname]
        lines += ["", f"filter {fname} ({desc['range']}): baseline {bdesc['answers']:,} answers in range, large "
                  f"{desc['answers']:,}; low_rating day {bdesc['low_rating_day']} / {desc['low_rating_day']}",
                  head, "-" * len(head)]
        b = {(r["page"], r["query"]): r for r in base["queries"]["timings"] if r["filter"] == fname}
        g = {(r["page"], r["query"]): r for r in large["queries"]["timings"] if r["filter"] == fname}
        side = [k for k in g if k[0] == "sidebar"]
        sums = {}
        for page in PAGES:
            keys = [k for k in g if k[0] == page]
            for k in keys:
                ratio = g[k]["warm_s"] / b[k]["warm_s"] if b[k]["warm_s"] else float("nan")
                slow = "  > 1 s" if g[k]["warm_s"] >= TARGET_S else ""
                lines.append(f"{page:<14} {k[1]:<46} {b[k]['cold_s']:>9.3f} {b[k]['warm_s']:>9.3f} {g[k]['cold_s']:>9.3f} "
                             f"{g[k]['warm_s']:>9.3f} {ratio:>6.1f}{slow}")
            counted = keys + (side if page != "sidebar" else [])  # the sidebar's query runs on every page
            total = {src: {c: round(sum(d[k][c] for k in counted), 4) for c in ("cold_s", "warm_s")}
                     for src, d in (("baseline", b), ("large", g))}
            ok = total["large"]["warm_s"] < TARGET_S
            sums[page] = {**total, "pass": ok}
            ratio = total["large"]["warm_s"] / total["baseline"]["warm_s"] if total["baseline"]["warm_s"] else float("nan")
            label = "= page total" + (" (+ sidebar)" if page != "sidebar" else "")
            lines += [f"{page:<14} {label:<46} {total['baseline']['cold_s']:>9.3f} {total['baseline']['warm_s']:>9.3f} "
                      f"{total['large']['cold_s']:>9.3f} {total['large']['warm_s']:>9.3f} {ratio:>6.1f}  "
                      f"{'PASS' if ok else 'FAIL'}", ""]
        results.setdefault("pages", {})[fname] = sums
    for key in ("baseline", "large"):
        r = results[key]
        lines.append(f"{key:<8} {r['events']:>9,} events: lake build {r['build_s']} s, KPI rebuild {r['rebuild_s']} s "
                     f"(peak RSS {r['rebuild_peak_rss_mb']} MB), dashboard open+sync {r['queries']['open_sync_s']} s, "
                     f"query process peak RSS {r['queries']['peak_rss_mb']} MB")
    failed = sorted({f"{page} ({fname})" for fname, sums in results["pages"].items() for page, v in sums.items() if not v["pass"]})
    lines.append(f"bench process peak RSS {results['bench_peak_rss_mb']} MB. Target every page total < {TARGET_S:g} s "
                 f"warm at {big}: " + ("PASS" if not failed else "FAIL: " + ", ".join(failed)))
    return "\n".join(lines)


def measure(home: Path, n_events: int, base: dict) -> dict:
    info = build_lake(home, n_events, base)
    rebuilt = in_child("rebuild", home)
    info.update({"rebuild_s": rebuilt["rebuild_s"], "rebuild_peak_rss_mb": rebuilt["peak_rss_mb"], "kpi_rows": rebuilt["rows"]})
    print(f"built {info['events']:,} events in {info['build_s']} s, KPI rebuild {info['rebuild_s']} s", file=sys.stderr)
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000, help="events in the large lake (default 1,000,000)")
    ap.add_argument("--phase", choices=["all", "rebuild", "queries"], default="all", help=argparse.SUPPRESS)
    ap.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase != "all":
        {"rebuild": phase_rebuild, "queries": phase_queries}[args.phase](args.home)
        return
    results: dict = {"measured_at": datetime.now(UTC).isoformat(), "target_page_s": TARGET_S, "warm_repeats": WARM_REPEATS}
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
    text = report(results)
    print(text)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    path = out / f"dashboard_{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nwritten {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
