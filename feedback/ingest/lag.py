"""Consumer lag of the ingestion group: records not yet committed, i.e. not yet in the lake.

Two baselines. :func:`lag` measures against offsets a producer saw acknowledged (exact on any
broker; the main job and the tests use it, since Tansu's ``end_offsets`` under-reports the high
watermark). :func:`consumer_lag` measures against the topics' end offsets, for readers that did
not produce (the dashboard): exact on a JVM Kafka/MSK, possibly low on the embedded Tansu broker.
Offsets are committed only after the lake commit, so lag 0 means the lake has caught up.
"""

from __future__ import annotations

import time

from kafka import TopicPartition
from kafka.errors import KafkaError

from feedback.bus.kafka import committed_offsets, make_consumer
from feedback.config import KafkaSettings
from feedback.errors import BusError


def lag(kafka: KafkaSettings, group_id: str, delivered_offsets: dict[str, int]) -> dict[str, int]:
    """Records not yet in the lake per ``topic:partition`` (0 when caught up)."""
    committed = committed_offsets(kafka, group_id)
    out = {}
    for tp, last in delivered_offsets.items():
        topic, partition = tp.rsplit(":", 1)
        out[tp] = max(0, last + 1 - committed.get((topic, int(partition)), 0))
    return out


def wait_until_caught_up(kafka: KafkaSettings, group_id: str, delivered_offsets: dict[str, int],
                         timeout_s: float = 300.0, poll_s: float = 0.25) -> dict[str, int]:
    """Block until :func:`lag` is zero everywhere. Raises BusError with the remaining lag on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        current = lag(kafka, group_id, delivered_offsets)
        if not any(current.values()):
            return current
        if time.monotonic() > deadline:
            raise BusError(f"consumer group {group_id} still behind after {timeout_s}s: {current}")
        time.sleep(poll_s)


def consumer_lag(kafka: KafkaSettings, group_id: str, timeout_s: float = 2.0) -> dict[str, int]:
    """Records not yet committed by ``group_id`` per ``topic:partition`` of the event topics.

    Raises BusError when the bus does not answer within about ``timeout_s`` seconds."""
    timeout_ms = int(timeout_s * 1000)
    try:
        consumer = make_consumer(kafka, request_timeout_ms=max(timeout_ms, 1000) + 500,
                                 bootstrap_timeout_ms=timeout_ms, connections_max_idle_ms=60_000)
    except (KafkaError, ValueError) as exc:
        raise BusError(f"cannot reach Kafka at {kafka.bootstrap_servers}: {exc}") from exc
    try:
        partitions = [TopicPartition(t, p) for t in kafka.event_topics for p in sorted(consumer.partitions_for_topic(t) or [])]
        ends = consumer.end_offsets(partitions) if partitions else {}
    except KafkaError as exc:
        raise BusError(f"cannot read end offsets: {exc}") from exc
    finally:
        consumer.close()
    committed = committed_offsets(kafka, group_id)
    return {f"{tp.topic}:{tp.partition}": max(0, end - committed.get((tp.topic, tp.partition), 0))
            for tp, end in ends.items()}
