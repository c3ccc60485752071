"""``flywheel ingest``: a consumer group over the event topics that lands events in the lake.

Loop: poll records until ``batch_max_events`` or ``batch_max_ms`` → decode and validate
(:func:`feedback.ingest.batch.build_batch`) → send rejected records to the dead-letter topic →
append rows to Iceberg (one commit per table, idempotent by key) → commit the Kafka offsets of the
batch. Offsets are committed only after the lake commit, so after a crash at any point each valid
event is in the lake exactly once (re-delivered records are dropped by key). The dead-letter topic
itself is at-least-once; the quarantine table is exactly-once.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from kafka import ConsumerRebalanceListener, TopicPartition
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata

from feedback.bus.kafka import make_consumer, make_producer
from feedback.config import HomeSettings, IngestSettings, KafkaSettings, LakeSettings
from feedback.ingest.batch import Batch, build_batch
from feedback.lake.catalog import open_catalog
from feedback.lake.writer import LakeWriter

log = logging.getLogger(__name__)


@dataclass
class IngestStats:
    """Running totals of one consumer process (returned by ``run()``)."""

    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    batches: int = 0
    records: int = 0
    appended: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    quarantined: dict[str, int] = field(default_factory=dict)
    last_commit_at: str | None = None
    committed_offsets: dict[str, int] = field(default_factory=dict)
    commit_failures: int = 0


class _ReloadOnAssign(ConsumerRebalanceListener):
    """After a rebalance another process may have written to our new partitions: re-read keys."""

    def __init__(self, writer: LakeWriter):
        self.writer = writer

    def on_partitions_revoked(self, revoked):
        pass

    def on_partitions_assigned(self, assigned):
        self.writer.reload_keys()


class IngestConsumer:
    """One ingestion process. ``run()`` blocks until ``stop()`` (or SIGTERM/SIGINT via the CLI)."""

    def __init__(self, kafka: KafkaSettings | None = None, ingest: IngestSettings | None = None,
                 lake: LakeSettings | None = None, home: HomeSettings | None = None):
        self.kafka = kafka or KafkaSettings()
        self.settings = ingest or IngestSettings()
        self.lake = lake or LakeSettings()
        self.writer = LakeWriter(open_catalog(self.lake, home), self.lake)
        self.topic_types = {self.kafka.topic(t): t for t in ("interaction", "feedback", "metric")}
        self.stats = IngestStats()
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self, idle_exit_s: float | None = None) -> IngestStats:
        """Consume until stopped (or, with ``idle_exit_s``, until no record came for that long)."""
        s = self.settings
        consumer = make_consumer(
            self.kafka, group_id=s.group_id, max_poll_interval_ms=s.max_poll_interval_ms,
            session_timeout_ms=s.session_timeout_ms, heartbeat_interval_ms=s.heartbeat_interval_ms,
            fetch_max_wait_ms=s.fetch_max_wait_ms, max_poll_records=s.batch_max_events,
        )
        consumer.subscribe(list(self.topic_types), listener=_ReloadOnAssign(self.writer))
        dlq = make_producer(self.kafka, linger_ms=5)
        last_record = time.monotonic()
        try:
            while not self._stop.is_set():
                records = self._collect(consumer)
                if records:
                    last_record = time.monotonic()
                    self._process(consumer, dlq, records)
                elif not consumer.assignment():
                    last_record = time.monotonic()  # still joining the group: not idle
                elif idle_exit_s is not None and time.monotonic() - last_record > idle_exit_s:
                    break
        finally:
            consumer.close(autocommit=False)
            dlq.close(timeout=5)
        return self.stats

    def _collect(self, consumer) -> list:
        """Poll until the batch is full or ``batch_max_ms`` passed since its first record."""
        s = self.settings
        records: list = []
        first_at = None
        while not self._stop.is_set():
            polled = consumer.poll(timeout_ms=s.poll_timeout_ms, max_records=s.batch_max_events - len(records))
            for recs in polled.values():
                records.extend(recs)
            if records and first_at is None:
                first_at = time.monotonic()
            if not records:
                return records
            if len(records) >= s.batch_max_events or time.monotonic() - first_at >= s.batch_max_ms / 1000:
                return records
            if not polled:
                return records
        return records

    def _process(self, consumer, dlq, records: list) -> None:
        now = datetime.now(UTC)
        batch = build_batch(records, self.topic_types, now, self.settings.max_event_bytes)
        self._dead_letter(dlq, batch)
        rows = dict(batch.rows)
        rows["quarantine"] = batch.quarantine
        offsets = {f"{t}:{p}": o for (t, p), o in sorted(batch.next_offsets.items())}
        result = self.writer.write(rows, {"flywheel.kafka.offsets": offsets, "flywheel.consumer_group": self.settings.group_id})
        try:
            consumer.commit({TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in batch.next_offsets.items()})
            self.stats.committed_offsets.update(offsets)
            self.stats.last_commit_at = datetime.now(UTC).isoformat()
        except (CommitFailedError, KafkaError) as exc:
            # A rebalance or broker restart: the records come again and are dropped by key.
            self.stats.commit_failures += 1
            log.warning("offset commit failed (%s); records will be re-delivered and deduplicated", type(exc).__name__)
        st = self.stats
        st.batches += 1
        st.records += len(records)
        for name, n in result.appended.items():
            st.appended[name] = st.appended.get(name, 0) + n
        for name, n in result.duplicates.items():
            st.duplicates[name] = st.duplicates.get(name, 0) + n
        for code, n in batch.reasons.items():
            st.quarantined[code] = st.quarantined.get(code, 0) + n

    def _dead_letter(self, dlq, batch: Batch) -> None:
        """Send each rejected record to ``<prefix>.dlq`` with its reason in headers; the value is the
        original bytes, cut to the event size limit (the quarantine table keeps them whole)."""
        if not batch.quarantine:
            return
        limit = self.settings.max_event_bytes
        topic = self.kafka.topic("dlq")
        for q in batch.quarantine:
            raw = q["raw"] or b""
            headers = [
                ("flywheel.reason_code", q["reason_code"].encode()),
                ("flywheel.reason", q["reason"].encode()[:1000]),
                ("flywheel.original", f"{q['kafka_topic']}:{q['kafka_partition']}:{q['kafka_offset']}".encode()),
                ("flywheel.truncated", b"true" if len(raw) > limit else b"false"),
            ]
            dlq.send(topic, raw[:limit], headers=headers)
        dlq.flush(timeout=30)


def install_signal_handlers(consumer: IngestConsumer) -> None:
    """Make SIGTERM/SIGINT finish the current batch and exit cleanly."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: consumer.stop())
