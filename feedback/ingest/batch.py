"""Turn one micro-batch of Kafka records into lake rows and quarantine rows (pure, no I/O)."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable, Protocol

from feedback.contracts import decode, validate
from feedback.errors import ContractError
from feedback.lake.tables import TABLE_FOR_TYPE, event_row


class Record(Protocol):
    """What we use of a kafka-python ``ConsumerRecord``."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    value: bytes | None


@dataclass
class Batch:
    """Rows for each lake table, the rejected records, and the next offset per (topic, partition)."""

    rows: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {t: [] for t in TABLE_FOR_TYPE.values()})
    quarantine: list[dict[str, Any]] = field(default_factory=list)
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    reasons: Counter = field(default_factory=Counter)

    @property
    def size(self) -> int:
        return sum(len(r) for r in self.rows.values()) + len(self.quarantine)


def quarantine_id(topic: str, partition: int, offset: int, raw: bytes | None) -> str:
    """Key of a quarantined record: sha256 of its coordinates and bytes, so a re-delivered record
    is quarantined once while a new record that reuses an offset (after a broker restart) is not
    mistaken for it."""
    digest = hashlib.sha256(f"{topic}\x1f{partition}\x1f{offset}\x1f".encode())
    digest.update(raw or b"")
    return digest.hexdigest()


def build_batch(records: Iterable[Record], topic_types: dict[str, str], now: datetime, max_event_bytes: int) -> Batch:
    """Decode and validate ``records``; valid events become rows of their table, the rest
    quarantine rows with a reason code and the original bytes.

    ``topic_types`` maps each event topic to the event type it must carry (``topic_mismatch``
    otherwise).
    """
    batch = Batch()
    for rec in records:
        batch.next_offsets[(rec.topic, rec.partition)] = rec.offset + 1
        event: dict[str, Any] | None = None
        try:
            event = decode(rec.value, max_event_bytes)
            validate(event)
            expected = topic_types.get(rec.topic)
            if expected is not None and event["event_type"] != expected:
                raise ContractError("topic_mismatch", f"{event['event_type']} event on topic {rec.topic}")
        except ContractError as exc:
            batch.reasons[exc.reason_code] += 1
            batch.quarantine.append(_quarantine_row(rec, exc, event, now))
            continue
        table = TABLE_FOR_TYPE[event["event_type"]]
        batch.rows[table].append(event_row(event, now, rec.topic, rec.partition, rec.offset))
    return batch


def _quarantine_row(rec: Record, exc: ContractError, event: dict[str, Any] | None, now: datetime) -> dict[str, Any]:
    event = event if isinstance(event, dict) else {}
    event_id = event.get("event_id")
    event_type = event.get("event_type")
    return {
        "quarantine_id": quarantine_id(rec.topic, rec.partition, rec.offset, rec.value),
        "quarantined_at": now,
        "reason_code": exc.reason_code,
        "reason": exc.detail,
        "event_id": event_id if isinstance(event_id, str) else None,
        "event_type": event_type if isinstance(event_type, str) else None,
        "raw": rec.value,
        "raw_size_bytes": len(rec.value or b""),
        "kafka_timestamp_ms": rec.timestamp,
        "kafka_topic": rec.topic,
        "kafka_partition": rec.partition,
        "kafka_offset": rec.offset,
    }
