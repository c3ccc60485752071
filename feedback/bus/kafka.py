"""kafka-python clients built from :class:`~feedback.config.KafkaSettings` (PLAINTEXT, SSL or SASL)."""

from __future__ import annotations

from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from feedback.config import KafkaSettings
from feedback.errors import BusError


def make_producer(settings: KafkaSettings, **overrides: Any) -> KafkaProducer:
    """A producer with ``acks=all`` and no idempotence (a restarted in-memory broker makes the
    idempotent producer fail every send; the consumer dedups by ``event_id`` instead)."""
    kwargs: dict[str, Any] = {
        **settings.client_kwargs(),
        "acks": "all",
        "enable_idempotence": False,
        "linger_ms": 20,
        "batch_size": 512 * 1024,
        "compression_type": "lz4",
        "max_request_size": 16 * 1024 * 1024,
        "retries": 5,
    }
    kwargs.update(overrides)
    return KafkaProducer(**kwargs)


def make_consumer(settings: KafkaSettings, **overrides: Any) -> KafkaConsumer:
    """A consumer of raw bytes with manual offset commits."""
    kwargs: dict[str, Any] = {
        **settings.client_kwargs(),
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_partition_fetch_bytes": 16 * 1024 * 1024,
    }
    kwargs.update(overrides)
    return KafkaConsumer(**kwargs)


def make_admin(settings: KafkaSettings, **overrides: Any) -> KafkaAdminClient:
    """An admin client (topic creation, consumer-group offsets). Raises BusError if unreachable."""
    try:
        return KafkaAdminClient(**settings.client_kwargs(), **overrides)
    except KafkaError as exc:
        raise BusError(f"cannot reach Kafka at {settings.bootstrap_servers}: {exc}") from exc


def ensure_topics(settings: KafkaSettings) -> list[str]:
    """Create the event topics and the dead-letter topic if missing; return their names."""
    names = settings.event_topics + [settings.topic("dlq")]
    admin = make_admin(settings)
    try:
        existing = set(admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            topics = [NewTopic(n, settings.partitions, settings.replication_factor) for n in missing]
            try:
                admin.create_topics(topics)
            except TopicAlreadyExistsError:
                pass
    except KafkaError as exc:
        raise BusError(f"topic creation failed: {exc}") from exc
    finally:
        admin.close()
    return names


def committed_offsets(settings: KafkaSettings, group_id: str) -> dict[tuple[str, int], int]:
    """The consumer group's committed next-offset per (topic, partition)."""
    admin = make_admin(settings)
    try:
        offsets = admin.list_group_offsets(group_id).get(group_id, {})
    except KafkaError as exc:
        raise BusError(f"cannot read offsets of group {group_id}: {exc}") from exc
    finally:
        admin.close()
    return {(tp.topic, tp.partition): om.offset for tp, om in offsets.items() if om.offset >= 0}
