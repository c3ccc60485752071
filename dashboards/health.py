"""Consumer lag as the bus reports it, for the freshness banner and the Data health page.

Lag per partition = the topic's end offset − the ingestion consumer group's committed offset
(committed only after the lake commit, so it is "records not yet in the lake"). Kafka's own
numbers, not the consumer's internal state. Caveat: the embedded Tansu broker under-reports end
offsets (``shared/notes/stack.md``), so there lag can read low; a JVM Kafka/MSK reports it exactly.
"""

from __future__ import annotations

from kafka import TopicPartition
from kafka.errors import KafkaError

from feedback.bus.kafka import committed_offsets, make_consumer
from feedback.config import KafkaSettings
from feedback.errors import BusError


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
