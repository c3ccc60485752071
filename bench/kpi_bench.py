"""KPI layer at scale: full rebuild time and peak memory, refresh after one batch, a dashboard
query, and emit→KPI latency through the real broker.

Lakes of N events are built from the real replayed events (all four data sets, 59,328 events),
re-keyed per copy (``.c<copy>`` on every id) and shifted by one day per copy, appended with
pyiceberg in groups of copies. Each rebuild runs in a child process so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402

from feedback.config import HomeSettings, KpiSettings, LakeSettings  # noqa: E402
from feedback.kpi.maintainer import KpiMaintainer  # noqa: E402
from feedback.kpi.query import KpiFilter, kpi_connection, query  # noqa: E402
from feedback.lake.catalog import ensure_table, open_catalog  # noqa: E402
from feedback.lake.tables import TABLE_FOR_TYPE, TABLE_SCHEMAS, event_row  # noqa: E402
from feedback.replay.sources import default_data_dir, iter_events  # noqa: E402

ID_COLUMNS = {"interactions": ["event_id", "conversation_id", "message_id", "parent_id"],
              "feedback": ["event_id", "conversation_id", "message_id", "chosen_message_id", "rejected_message_id"]}


def base_tables() -> dict[str, pa.Table]:
    rows: dict[str, list] = {"interactions": [], "feedback": []}
    now = datetime.now(UTC)
    for _, e in iter_events(["oasst1", "tulu", "hh_rlhf", "feedbackqa"], default_data_dir(), project="bench",
                            replay_time=now - timedelta(days=400)):
        table = TABLE_FOR_TYPE[e["event_type"]]
        if table in rows:
            rows[table].append(event_row(e, now, "bench", 0, 0))
    return {t: pa.Table.from_pylist(r, schema=TABLE_SCHEMAS[t]) for t, r in rows.items()}


def copy_of(base: pa.Table, name: str, copy: int) -> pa.Table:
    suffix = f".c{copy}"
    cols = {}
    for field in base.schema:
        col = base.column(field.name)
        if field.name in ID_COLUMNS[name]:
            col = pc.binary_join_element_wise(col, pa.scalar(suffix), "")
        elif field.name == "occurred_at":
            col = pc.add(col, pa.scalar(timedelta(days=copy), pa.duration("us")))
        cols[field.name] = col
    return pa.table(cols, schema=base.schema)


def build_lake(home: Path, n_events: int, base: dict[str, pa.Table]) -> dict:
    per_copy = sum(t.num_rows for t in base.values())
    copies = math.ceil(n_events / per_copy)
    catalog = open_catalog(LakeSettings(), HomeSettings(home=home))
    tables = {name: ensure_table(catalog, LakeSettings(), name) for name in base}
    started = time.perf_counter()
    group = 8
    for first in range(0, copies, group):
        for name, table in tables.items():
            parts = [copy_of(base[name], name, c) for c in range(first, min(first + group, copies))]
            table.append(pa.concat_tables(parts))
    return {"events": copies * per_copy, "copies": copies, "build_s": round(time.perf_counter() - started, 1)}


def rebuild_in_child(home: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--phase", "rebuild", "--home", str(home)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def phase_rebuild(home: Path) -> None:
    catalog = open_catalog(LakeSettings(), HomeSettings(home=home))
    m = KpiMaintainer(catalog, LakeSettings(), KpiSettings())
    t = time.perf_counter()
    r = m.rebuild()
    elapsed = time.perf_counter() - t
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rebuild_s": round(elapsed, 2), "peak_rss_mb": round(peak_mb), "days": r.days["kpi_feedback"],
                      "rows": r.rows}))


def refresh_after_batch(home: Path, base: dict[str, pa.Table], copy: int, live: bool) -> float:
    """Append one batch of ~20k new events (a new copy, cut) and time the incremental refresh.
    ``live``: the batch's event times are all now (one day touched), as in production; otherwise
    they keep the historic spread of the sources (~100 days touched)."""
    catalog = open_catalog(LakeSettings(), HomeSettings(home=home))
    m = KpiMaintainer(catalog, LakeSettings(), KpiSettings())
    m.refresh()
    for name in base:
        part = copy_of(base[name], name, copy)
        part = part.slice(0, 20_000 * part.num_rows // 59_328)
        if live:
            now = pa.array([datetime.now(UTC)] * part.num_rows, part.schema.field("occurred_at").type)
            part = part.set_column(part.schema.get_field_index("occurred_at"), "occurred_at", now)
        ensure_table(catalog, LakeSettings(), name).append(part)
    t = time.perf_counter()
    m.refresh()
    return time.perf_counter() - t


def dashboard_query(home: Path) -> float:
    catalog = open_catalog(LakeSettings(), HomeSettings(home=home))
    times = []
    for _ in range(5):
        t = time.perf_counter()
        con = kpi_connection(catalog)
        week = KpiFilter(start=datetime(2023, 4, 1, tzinfo=UTC), end=datetime(2023, 4, 8, tzinfo=UTC))
        query(con, "thumbs_up_rate", "day", ["model"], week)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def emit_to_kpi(probes: int) -> list[float]:
    """Through the real broker: each probe logs an interaction and a thumb, then waits until the
    KPI tables count it. ``flywheel ingest`` and ``flywheel kpi follow`` run as child processes, as
    in ``flywheel demo`` (default settings)."""
    from tests.stack import Stack

    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(Path(tmp) / "fw")
        stack.start_broker()
        latencies = []
        try:
            stack.consumer_process()
            stack.cli_process(["kpi", "follow"])
            with stack.client(flush_interval_ms=20) as client:
                for i in range(probes + 1):
                    t = time.perf_counter()
                    msg = client.log_interaction(conversation_id=f"probe-{i}", prompt=[{"role": "user", "content": "q"}],
                                                 response="a", model="probe-model")
                    client.log_feedback(conversation_id=f"probe-{i}", message_id=msg, kind="thumb", thumb="up")
                    while True:
                        rows = query(kpi_connection(stack.catalog()), "thumbs_up_rate", "total", [], KpiFilter(dims={"model": "probe-model"}))
                        if rows and rows[0].n == i + 1:
                            break
                        time.sleep(0.02)
                    if i:  # the first probe includes the consumer group join and process start
                        latencies.append(time.perf_counter() - t)
        finally:
            stack.close()
    return latencies


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--probes", type=int, default=20)
    ap.add_argument("--phase", choices=["all", "rebuild", "latency"], default="all")
    ap.add_argument("--home", type=Path)
    args = ap.parse_args()
    if args.phase == "rebuild":
        phase_rebuild(args.home)
        return
    results = {"measured_at": datetime.now(UTC).isoformat(), "scales": []}
    base = base_tables() if args.phase == "all" else None
    for n in args.events if args.phase == "all" else []:
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp) / "fw"
            info = build_lake(home, n, base)
            info.update(rebuild_in_child(home))
            info["refresh_after_20k_live_batch_s"] = round(refresh_after_batch(home, base, info["copies"] + 1, True), 3)
            info["refresh_after_20k_historic_batch_s"] = round(refresh_after_batch(home, base, info["copies"] + 2, False), 3)
            info["dashboard_query_s"] = round(dashboard_query(home), 3)
            results["scales"].append(info)
            print(json.dumps(info), file=sys.stderr)
    lat = sorted(emit_to_kpi(args.probes))
    results["emit_to_kpi_p50_s"] = round(statistics.median(lat), 3)
    results["emit_to_kpi_p95_s"] = round(lat[int(0.95 * (len(lat) - 1))], 3)
    print(json.dumps(results, indent=2))
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"kpi-{int(time.time())}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
