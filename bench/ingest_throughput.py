"""Kafka → Iceberg ingestion throughput and emit→lake latency, against the raw consume rate.

1. Produce N real events (the four data sets, re-keyed to reach N) into the event topics.
2. Baseline: a kafka-python consumer with the ingest settings reads all N records, doing nothing.
3. Ingest: an ``IngestConsumer`` (new consumer group, empty lake) lands all N in the lake.
4. Latency: with the consumer running, the SDK emits events at a steady rate; for each, latency =
   time its lake commit returned − its ``occurred_at`` (set by the SDK when logged).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson  # noqa: E402

from feedback.bus.kafka import make_consumer, make_producer  # noqa: E402
from feedback.contracts import encode, parse_occurred_at  # noqa: E402
from feedback.lake.writer import LakeWriter  # noqa: E402
from feedback.replay.sources import default_data_dir, iter_events  # noqa: E402
from tests.stack import Stack  # noqa: E402


def real_records(n: int, kafka, event_time: str) -> list[tuple[str, bytes, bytes]]:
    """N re-keyed real events. ``event_time="source"`` keeps the sources' timestamps (a historic
    replay: ~150 day partitions per batch); ``"now"`` stamps them with the current time, as live
    traffic would be (one or two day partitions per batch)."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    base = [e for _, e in iter_events(["oasst1", "tulu", "hh_rlhf", "feedbackqa"], default_data_dir(),
                                      project="bench", replay_time=datetime.now(UTC))]
    out = []
    copy = 0
    while len(out) < n:
        for e in base:
            if len(out) == n:
                break
            ev = {**e, "event_id": f"{e['event_id']}.c{copy}"}
            if event_time == "now":
                ev["occurred_at"] = now
            key = (e["body"].get("conversation_id") or "") + f".c{copy}"
            out.append((kafka.topic(e["event_type"]), key.encode(), encode(ev)))
        copy += 1
    return out


def produce(stack: Stack, records) -> float:
    producer = make_producer(stack.kafka)
    t = time.perf_counter()
    for topic, key, value in records:
        producer.send(topic, value=value, key=key)
    producer.flush()
    producer.close()
    return time.perf_counter() - t


def raw_consume(stack: Stack, n: int) -> float:
    s = stack.ingest_settings()
    consumer = make_consumer(stack.kafka, group_id="bench-raw", max_poll_interval_ms=s.max_poll_interval_ms,
                             session_timeout_ms=s.session_timeout_ms, heartbeat_interval_ms=s.heartbeat_interval_ms,
                             fetch_max_wait_ms=s.fetch_max_wait_ms, max_poll_records=s.batch_max_events)
    consumer.subscribe(stack.kafka.event_topics)
    seen, t0 = 0, None
    while seen < n:
        polled = consumer.poll(timeout_ms=100)
        if polled and t0 is None:
            t0 = time.perf_counter()
        seen += sum(len(v) for v in polled.values())
    elapsed = time.perf_counter() - t0
    consumer.close()
    return elapsed


def ingest(stack: Stack, n: int) -> tuple[float, dict]:
    """Time from the first landed batch (the group has joined) to the last; rate over the rest."""
    consumer = stack.consumer()
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    while consumer.stats.records == 0:
        time.sleep(0.005)
    t0, first = time.perf_counter(), consumer.stats.records
    while consumer.stats.records < n:
        time.sleep(0.005)
    elapsed = time.perf_counter() - t0
    consumer.stop()
    thread.join()
    assert not consumer.stats.quarantined, f"bench events were quarantined: {consumer.stats.quarantined}"
    return elapsed, {"timed_records": n - first, "batches": consumer.stats.batches}


def latency(stack: Stack, rate_per_s: int, seconds: float) -> list[float]:
    commits: list[tuple[float, list[float]]] = []
    write_s: list[float] = []
    original = LakeWriter.write

    def timed_write(self, rows_by_table, props):
        started = time.time()
        result = original(self, rows_by_table, props)
        done = time.time()
        write_s.append(done - started)
        commits.append((done, [r["occurred_at"].timestamp() for rows in rows_by_table.values() for r in rows if "occurred_at" in r]))
        return result

    LakeWriter.write = timed_write
    consumer = stack.consumer(batch_max_ms=200)
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    warmup = stack.client()
    while not commits:  # until the group has joined and a first batch committed
        warmup.log_metric(message_id="warmup", name="warmup", value=1)
        warmup.flush()
        time.sleep(0.5)
    warmup.close()
    time.sleep(1)
    commits.clear()
    client = stack.client(flush_interval_ms=20, batch_max_events=200)
    total = int(rate_per_s * seconds)
    start = time.perf_counter()
    for i in range(total):
        client.log_feedback(conversation_id=f"lat-{i % 100}", kind="thumb", thumb="up")
        sleep = start + (i + 1) / rate_per_s - time.perf_counter()
        if sleep > 0:
            time.sleep(sleep)
    client.close()
    deadline = time.time() + 30
    while sum(len(ts) for _, ts in commits) < total and time.time() < deadline:
        time.sleep(0.1)
    consumer.stop()
    thread.join()
    LakeWriter.write = original
    print(f"latency run: {len(write_s)} lake writes, median {statistics.median(write_s):.3f}s, max {max(write_s):.3f}s", file=sys.stderr)
    return [done - t for done, ts in commits for t in ts]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--event-time", choices=["source", "now"], default="source",
                    help="keep the sources' event times (historic replay) or stamp them now (live traffic)")
    ap.add_argument("--latency-rate", type=int, default=2_000, help="events/s emitted during the latency run")
    ap.add_argument("--latency-seconds", type=float, default=15.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(Path(tmp) / "fw")
        stack.start_broker()
        try:
            records = real_records(args.events, stack.kafka, args.event_time)
            mb = sum(len(v) for _, _, v in records) / 1e6
            produce_s = produce(stack, records)
            raw_s = raw_consume(stack, len(records))
            ingest_s, info = ingest(stack, len(records))
            timed_n = info["timed_records"]
        finally:
            stack.close()
        fresh = Stack(Path(tmp) / "fw-latency")  # its own broker and lake: no backlog to read first
        fresh.start_broker()
        try:
            lat = sorted(latency(fresh, args.latency_rate, args.latency_seconds))
        finally:
            fresh.close()
    raw_rate = len(records) / raw_s
    ingest_rate = timed_n / ingest_s
    result = {
        "events": len(records), "event_time": args.event_time, "megabytes": round(mb, 1), "produce_events_per_s": round(len(records) / produce_s),
        "raw_consume_events_per_s": round(raw_rate), "ingest_events_per_s": round(ingest_rate),
        "ingest_vs_raw_ratio": round(ingest_rate / raw_rate, 3), "ingest_batches": info["batches"],
        "latency_events": len(lat), "latency_rate_per_s": args.latency_rate,
        "emit_to_lake_p50_s": round(statistics.median(lat), 3) if lat else None,
        "emit_to_lake_p95_s": round(lat[int(0.95 * (len(lat) - 1))], 3) if lat else None,
        "measured_at": datetime.now(UTC).isoformat(),
    }
    print(json.dumps(result, indent=2))
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"ingest_throughput-{int(time.time())}.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
