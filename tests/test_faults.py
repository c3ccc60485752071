"""Fault tests on the real broker and lake: consumer killed with SIGKILL mid-replay, and bad
records quarantined (table + dead-letter topic) while valid ones flow on."""

import random
import signal
import threading
import time
from collections import Counter

import orjson
from kafka import KafkaConsumer

from feedback.bus.kafka import committed_offsets, make_producer
from feedback.contracts import build_event, encode
from feedback.ingest.lag import wait_until_caught_up
from feedback.replay.run import replay


def test_sigkill_consumer_during_replay_lands_every_event_once(stack, data_dir):
    """Kill ``flywheel ingest`` with SIGKILL at random moments while a replay is under way
    (small batches, so kills fall between and during lake commits), restart it, and check every
    event is in the lake exactly once."""
    rng = random.Random(20261122)
    small_batches = {"FLYWHEEL_INGEST_BATCH_MAX_EVENTS": "400", "FLYWHEEL_INGEST_BATCH_MAX_MS": "200"}
    proc = stack.consumer_process(small_batches)
    result = {}
    sender = threading.Thread(target=lambda: result.update(
        r=replay(["tulu", "feedbackqa", "oasst1"], data_dir, stack.kafka, home=stack.home_settings)))
    sender.start()
    kills = 0
    progress = []
    while kills < 4:
        deadline = time.monotonic() + 60
        before = sum(committed_offsets(stack.kafka, stack.group_id).values())
        while sum(committed_offsets(stack.kafka, stack.group_id).values()) <= before:  # it is committing again
            assert proc.poll() is None and time.monotonic() < deadline, "consumer made no progress"
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        progress.append(sum(committed_offsets(stack.kafka, stack.group_id).values()))
        proc = stack.consumer_process(small_batches)
    sender.join()
    r = result["r"]
    wait_until_caught_up(stack.kafka, stack.group_id, r.sdk_stats["delivered_offsets"], timeout_s=300)
    con = stack.sql()
    landed = Counter()
    for table, event_type in (("interactions", "interaction"), ("feedback", "feedback")):
        total, unique = con.execute(f"SELECT count(*), count(DISTINCT event_id) FROM {table}").fetchone()
        assert total == unique, f"duplicates in {table}"
        for source, n in con.execute(f"SELECT source, count(*) FROM {table} GROUP BY source").fetchall():
            landed[(source.removeprefix("replay:"), event_type)] = n
    assert landed == +r.produced
    assert progress[-1] < r.total  # the last kill came before the replay had fully landed


def test_bad_records_go_to_quarantine_and_dead_letter_topic_while_valid_flow_on(stack):
    producer = make_producer(stack.kafka)
    topic = stack.kafka.topic("feedback")
    valid = [build_event("feedback", {"conversation_id": f"c{i}", "kind": "thumb", "source": "end_user", "thumb": "up"},
                         project="p", source="test", event_id=f"ok-{i}") for i in range(300)]
    oversized = build_event("feedback", {"conversation_id": "c", "kind": "comment", "source": "end_user",
                                         "comment": "x" * 1_200_000}, project="p", source="test", event_id="big")
    wrong_schema = build_event("feedback", {"conversation_id": "c", "kind": "rating", "source": "end_user"},
                               project="p", source="test", event_id="no-rating")
    interaction_on_feedback_topic = build_event(
        "interaction", {"conversation_id": "c", "message_id": "m", "prompt": [], "response": "r", "model": "x"},
        project="p", source="test", event_id="misrouted")
    bad = {
        "undecodable": b'{"event_id": "half',
        "oversized": encode(oversized),
        "schema_invalid": encode(wrong_schema),
        "unsupported_version": encode({**valid[0], "event_id": "v9", "schema_version": "9.0"}),
        "topic_mismatch": encode(interaction_on_feedback_topic),
    }
    for i, event in enumerate(valid):
        producer.send(topic, encode(event), key=event["body"]["conversation_id"].encode())
        if i % 60 == 0:
            code = list(bad)[i // 60]
            producer.send(topic, bad[code])
    producer.flush()
    consumer, thread = stack.consumer_thread()
    deadline = time.monotonic() + 60
    while consumer.stats.records < 305 and time.monotonic() < deadline:
        time.sleep(0.2)
    consumer.stop()
    thread.join(30)

    con = stack.sql()
    assert con.execute("SELECT count(*) FROM feedback").fetchone()[0] == 300
    rows = con.execute("SELECT reason_code, reason, raw, raw_size_bytes, kafka_topic FROM quarantine").fetchall()
    by_code = {r[0]: r for r in rows}
    assert set(by_code) == set(bad) and len(rows) == len(bad)
    for code, raw in bad.items():
        assert by_code[code][2] == raw and by_code[code][3] == len(raw)  # original bytes kept whole
        assert by_code[code][4] == topic and by_code[code][1]
    assert "required" in by_code["schema_invalid"][1]

    dlq = KafkaConsumer(stack.kafka.topic("dlq"), bootstrap_servers=stack.kafka.bootstrap_servers,
                        auto_offset_reset="earliest", consumer_timeout_ms=3000)
    dead = [m for m in dlq]
    dlq.close()
    reasons = {dict(m.headers)["flywheel.reason_code"].decode(): m for m in dead}
    assert set(reasons) == set(bad)
    assert dict(reasons["oversized"].headers)["flywheel.truncated"] == b"true"
    assert reasons["schema_invalid"].value == bad["schema_invalid"]


def test_quarantine_is_exactly_once_across_a_restart(stack):
    producer = make_producer(stack.kafka)
    for i in range(5):
        producer.send(stack.kafka.topic("metric"), b"garbage %d" % i)
    producer.flush()
    for _ in range(2):  # the second consumer starts from committed offsets: nothing new
        consumer = stack.consumer()
        consumer.run(idle_exit_s=2)
    assert stack.sql().execute("SELECT count(*), count(DISTINCT quarantine_id) FROM quarantine").fetchone() == (5, 5)


def test_snapshots_record_the_kafka_offsets_of_their_batch(stack):
    producer = make_producer(stack.kafka)
    for i in range(50):
        e = build_event("metric", {"message_id": f"m{i}", "name": "cache_hit", "value": 1}, project="p", source="t")
        producer.send(stack.kafka.topic("metric"), encode(e), key=b"k")
    producer.flush()
    stack.consumer().run(idle_exit_s=2)
    snapshot = stack.catalog().load_table("flywheel.metrics").current_snapshot()
    offsets = orjson.loads(snapshot.summary["flywheel.kafka.offsets"])
    committed = committed_offsets(stack.kafka, stack.group_id)
    assert sum(offsets.values()) == 50
    assert all(committed[tuple([t, int(p)])] == o for tp, o in offsets.items() for t, p in [tp.rsplit(":", 1)])
