"""The application-side SDK: ``FlywheelClient.log_interaction / log_feedback / log_metric``.

Guarantees to the host application:

* **never raises** from a ``log_*``, ``flush`` or ``close`` call; failures are counted in
  :meth:`FlywheelClient.stats` and logged (codes and counts, never user text);
* **never blocks** on the network: events go to an in-memory queue that a background thread sends
  to Kafka in batches (kafka-python, lz4, ``acks=all``);
* **loses nothing while the broker is down**: undelivered events are spooled to disk
  (:class:`~feedback.sdk.spool.Spool`) and delivered when it is back; when the disk budget is full
  the client logs an error, sets ``spool_full`` and counts ``dropped_spool_full``;
* **idempotent retries**: every event has an ``event_id`` (yours, or a generated UUID4); re-sends
  after an outage are dropped by the consumer.

A memory-only broker (the embedded Tansu) forgets acknowledged events that were not yet consumed
when it restarts. The client therefore keeps the events acknowledged in the last
``redeliver_window_s`` and sends them again after an outage or when it sees a partition's offsets
go backwards (a restarted log).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections import deque
from datetime import datetime
from typing import Any

from kafka.errors import KafkaError

from feedback.bus.kafka import make_producer
from feedback.config import HomeSettings, KafkaSettings, SDKSettings
from feedback.contracts import build_event, encode, validate
from feedback.errors import ContractError
from feedback.sdk.spool import Spool

log = logging.getLogger(__name__)
SDK_SOURCE = "sdk-python/0.1.0"
Record = tuple[str, bytes | None, bytes]  # topic, key, value


class FlywheelClient:
    """Batches events to the Kafka topics of :class:`~feedback.config.KafkaSettings`.

    Usable as a context manager (``close()`` on exit). Thread-safe.
    """

    def __init__(self, settings: SDKSettings | None = None, kafka: KafkaSettings | None = None,
                 home: HomeSettings | None = None, source: str = SDK_SOURCE):
        self.settings = settings or SDKSettings()
        self.kafka = kafka or KafkaSettings()
        self.source = source
        spool_dir = self.settings.spool_dir or (home or HomeSettings()).home / "spool"
        self._spool = Spool(spool_dir, self.settings.spool_max_bytes)
        self._queue: queue.Queue[Record] = queue.Queue(maxsize=self.settings.queue_max_events)
        self._counts = {k: 0 for k in ("accepted", "delivered", "spooled", "redelivered", "invalid",
                                        "rejected_oversized", "dropped_spool_full", "send_failures", "errors")}
        self._delivered_offsets: dict[str, int] = {}
        self._recent: deque[tuple[float, Record]] = deque()  # acknowledged, for redelivery
        self._recent_bytes = 0
        self._outage_since: float | None = None
        self._spool_full_logged = False
        self._producer = None
        self._lock = threading.Lock()
        self._idle = threading.Event()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flywheel-sdk-sender", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ public API
    def log_interaction(self, *, conversation_id: str, prompt: list[dict[str, str]], response: str, model: str,
                        message_id: str | None = None, parent_id: str | None = None, provider: str | None = None,
                        prompt_version: str | None = None, app: str | None = None, user_id: str | None = None,
                        tokens_in: int | None = None, tokens_out: int | None = None,
                        latency_ms: float | None = None, time_to_first_token_ms: float | None = None,
                        cost_usd: float | None = None, status: str = "ok", error: str | None = None,
                        tags: list[str] | None = None, metadata: dict[str, Any] | None = None,
                        event_id: str | None = None, occurred_at: datetime | str | None = None,
                        project: str | None = None) -> str | None:
        """Log one model response. ``prompt`` is ``[{"role", "content"}, ...]``; times in ms, cost in USD.

        Returns the event id (``message_id`` defaults to it), or None if the call failed (counted).
        """
        try:
            event_id = event_id or str(uuid.uuid4())
            body = {"conversation_id": conversation_id, "message_id": message_id or event_id, "parent_id": parent_id,
                    "prompt": prompt, "response": response, "model": model, "provider": provider,
                    "prompt_version": prompt_version, "app": app, "user_id": user_id, "tokens_in": tokens_in,
                    "tokens_out": tokens_out, "latency_ms": latency_ms, "time_to_first_token_ms": time_to_first_token_ms,
                    "cost_usd": cost_usd, "status": status, "error": error, "tags": tags or [], "metadata": metadata or {}}
            return self._log("interaction", body, event_id, occurred_at, project)
        except Exception:  # noqa: BLE001 - the SDK must never raise into the host app
            return self._count_error("log_interaction")

    def log_feedback(self, *, conversation_id: str, kind: str, message_id: str | None = None,
                     thumb: str | None = None, rating: float | None = None, rating_scale: tuple[float, float] = (0.0, 1.0),
                     rating_name: str = "overall", rating_label: str | None = None, category: str | None = None,
                     comment: str | None = None, correction: str | None = None,
                     chosen_message_id: str | None = None, rejected_message_id: str | None = None,
                     preference_strength: float | None = None, tie: bool = False, source: str = "end_user",
                     author_id: str | None = None, metadata: dict[str, Any] | None = None,
                     event_id: str | None = None, occurred_at: datetime | str | None = None,
                     project: str | None = None) -> str | None:
        """Log feedback of ``kind`` thumb | rating | category | comment | correction | preference.

        ``thumb`` is "up"/"down"; ``rating`` is a value on ``rating_scale`` (min, max);
        ``source`` is end_user | annotator | model_judge. Returns the event id or None (counted).
        """
        try:
            body: dict[str, Any] = {"conversation_id": conversation_id, "message_id": message_id, "kind": kind,
                                    "source": source, "author_id": author_id, "metadata": metadata or {}}
            if thumb is not None:
                body["thumb"] = thumb
            if rating is not None:
                body["rating"] = {"value": rating, "scale_min": rating_scale[0], "scale_max": rating_scale[1],
                                  "name": rating_name, "label": rating_label}
            for name, value in (("category", category), ("comment", comment), ("correction", correction)):
                if value is not None:
                    body[name] = value
            if chosen_message_id is not None or rejected_message_id is not None:
                body["preference"] = {"chosen_message_id": chosen_message_id, "rejected_message_id": rejected_message_id,
                                      "strength": preference_strength, "tie": tie}
            return self._log("feedback", body, event_id, occurred_at, project)
        except Exception:  # noqa: BLE001
            return self._count_error("log_feedback")

    def log_metric(self, *, message_id: str, name: str, value: float, unit: str | None = None,
                   conversation_id: str | None = None, metadata: dict[str, Any] | None = None,
                   event_id: str | None = None, occurred_at: datetime | str | None = None,
                   project: str | None = None) -> str | None:
        """Log a named number about a message (e.g. ``retrieval_latency_ms``). Returns the event id or None."""
        try:
            body = {"conversation_id": conversation_id, "message_id": message_id, "name": name, "value": value,
                    "unit": unit, "metadata": metadata or {}}
            return self._log("metric", body, event_id, occurred_at, project)
        except Exception:  # noqa: BLE001
            return self._count_error("log_metric")

    def log_event(self, event: dict[str, Any]) -> str | None:
        """Send an already built envelope (``feedback.contracts.build_event``) as it is. Returns its id or None."""
        try:
            return self._enqueue(event)
        except Exception:  # noqa: BLE001
            return self._count_error("log_event")

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until every event logged so far is delivered or spooled. True if it got there in time."""
        try:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                if self._queue.unfinished_tasks == 0:
                    return True
                time.sleep(0.01)
            return False
        except Exception:  # noqa: BLE001
            self._count_error("flush")
            return False

    def close(self, timeout_s: float = 30.0) -> None:
        """Flush, try once more to deliver the spool, and stop the sender thread."""
        try:
            self.flush(timeout_s)
            self._closing.set()
            self._thread.join(timeout_s)
            if self._producer is not None:
                self._producer.close(timeout=5)
        except Exception:  # noqa: BLE001
            self._count_error("close")

    def stats(self) -> dict[str, Any]:
        """Counters (accepted, delivered, spooled, redelivered, invalid, rejected_oversized,
        dropped_spool_full, send_failures, errors), ``queue_depth``, ``spool_bytes``, ``spool_full``,
        ``broker_up`` and ``delivered_offsets`` (highest acknowledged offset per ``topic:partition``)."""
        with self._lock:
            out: dict[str, Any] = dict(self._counts)
            out["delivered_offsets"] = dict(self._delivered_offsets)
        out.update(queue_depth=self._queue.qsize(), spool_bytes=self._spool.bytes,
                   spool_full=self._spool.bytes >= self._spool.max_bytes * 0.99 or out["dropped_spool_full"] > 0,
                   broker_up=self._outage_since is None and self._producer is not None)
        return out

    def __enter__(self) -> "FlywheelClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals
    def _log(self, event_type: str, body: dict[str, Any], event_id: str | None,
             occurred_at: datetime | str | None, project: str | None) -> str | None:
        event = build_event(event_type, body, project=project or self.settings.project, source=self.source,
                            event_id=event_id, occurred_at=occurred_at)
        return self._enqueue(event)

    def _enqueue(self, event: dict[str, Any]) -> str | None:
        value = encode(event)
        if len(value) > 1_048_576:
            self._bump("rejected_oversized")
            log.warning("flywheel: event of %d bytes refused (limit 1 MiB)", len(value))
            return None
        try:
            validate(event)
        except ContractError as exc:
            # Sent anyway: the consumer quarantines it with its reason, where it can be inspected.
            self._bump("invalid")
            log.warning("flywheel: invalid %s event sent for quarantine (%s)", event.get("event_type"), exc.reason_code)
        body = event.get("body") if isinstance(event.get("body"), dict) else {}
        key = body.get("conversation_id")
        record = (self.kafka.topic(str(event.get("event_type"))), key.encode() if isinstance(key, str) else None, value)
        self._bump("accepted")
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self._spool_records([record])
        return event.get("event_id")

    def _bump(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def _count_error(self, where: str) -> None:
        self._bump("errors")
        log.exception("flywheel: %s failed; event not logged", where)
        return None

    def _run(self) -> None:
        s = self.settings
        while True:
            batch = self._drain(s.batch_max_events, s.flush_interval_ms / 1000)
            try:
                if batch:
                    self._send_or_spool(batch)
                if not self._spool.empty and self._ensure_producer():
                    self._deliver_spool()
            except Exception:  # noqa: BLE001 - keep the sender alive whatever happens
                log.exception("flywheel: sender loop error")
                self._spool_records(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()
            if self._closing.is_set() and self._queue.empty():
                return
            if not batch and self._outage_since is not None:
                time.sleep(s.retry_interval_s)

    def _drain(self, max_events: int, wait_s: float) -> list[Record]:
        batch: list[Record] = []
        deadline = time.monotonic() + wait_s
        while len(batch) < max_events:
            remaining = deadline - time.monotonic()
            try:
                batch.append(self._queue.get(timeout=max(remaining, 0.0)) if remaining > 0 else self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _ensure_producer(self) -> bool:
        if self._producer is not None:
            return True
        try:
            send_timeout_ms = int(self.settings.send_timeout_s * 1000)
            self._producer = make_producer(self.kafka, max_block_ms=2_000, bootstrap_timeout_ms=2_000, retries=3,
                                           request_timeout_ms=min(5_000, send_timeout_ms // 2),
                                           delivery_timeout_ms=send_timeout_ms)
            return True
        except KafkaError as exc:
            self._mark_outage(exc)
            return False

    def _mark_outage(self, exc: BaseException) -> None:
        if self._outage_since is None:
            self._outage_since = time.time()
            log.warning("flywheel: broker unreachable (%s); spooling events to %s", type(exc).__name__, self._spool.dir)
        self._bump("send_failures")
        if self._producer is not None:
            try:
                self._producer.close(timeout=0)
            except Exception:  # noqa: BLE001
                pass
            self._producer = None

    def _send(self, records: list[Record]) -> list[Record]:
        """Send and wait for acknowledgements; return the records that failed."""
        if not self._ensure_producer():
            return records
        futures = []
        try:
            for topic, key, value in records:
                futures.append(self._producer.send(topic, value=value, key=key))
            self._producer.flush(timeout=self.settings.send_timeout_s)
        except KafkaError as exc:
            self._mark_outage(exc)
        failed, acked = [], []
        regressed = False
        for i, record in enumerate(records):
            fut = futures[i] if i < len(futures) else None
            if fut is None or not fut.is_done or fut.failed():
                failed.append(record)
                continue
            md = fut.value
            tp = f"{md.topic}:{md.partition}"
            with self._lock:
                # Offsets only grow in a partition's log: a smaller one means the broker lost its log.
                if md.offset <= self._delivered_offsets.get(tp, -1):
                    regressed = True
                self._delivered_offsets[tp] = md.offset
            acked.append(record)
        if failed and self._outage_since is None:
            self._mark_outage(RuntimeError("send failed"))
        self._bump("delivered", len(acked))
        self._remember(acked)
        if acked and not failed and (self._outage_since is not None or regressed):
            self._redeliver_recent(self._outage_since or time.time())
        return failed

    def _send_or_spool(self, records: list[Record]) -> None:
        failed = self._send(records) if self._spool.empty or self._outage_since is None else records
        if failed:
            self._spool_records(failed)

    def _spool_records(self, records: list[Record]) -> None:
        if not records:
            return
        written = self._spool.append(records)
        self._bump("spooled", written)
        dropped = len(records) - written
        if dropped:
            self._bump("dropped_spool_full", dropped)
            if not self._spool_full_logged:
                self._spool_full_logged = True
                log.error("flywheel: spool %s is full (%d bytes budget): %d events DROPPED; raise "
                          "FLYWHEEL_SDK_SPOOL_MAX_BYTES or restore the broker", self._spool.dir, self._spool.max_bytes, dropped)

    def _deliver_spool(self) -> None:
        for segment in self._spool.segments():
            records = self._spool.read(segment)
            if self._send(records):
                return  # still down: keep the segment; its delivered records come again, deduplicated later
            self._spool.remove(segment)
        self._spool_full_logged = False

    def _remember(self, records: list[Record]) -> None:
        if self.settings.redeliver_window_s <= 0:
            return
        now = time.time()
        for record in records:
            self._recent.append((now, record))
            self._recent_bytes += len(record[2])
        horizon = now - self.settings.redeliver_window_s
        while self._recent and (self._recent[0][0] < horizon or self._recent_bytes > self.settings.redeliver_max_bytes):
            self._recent_bytes -= len(self._recent.popleft()[1][2])

    def _redeliver_recent(self, since: float) -> None:
        """After an outage, re-send what was acknowledged in the window before it (see module doc)."""
        self._outage_since = None
        log.warning("flywheel: broker back; re-sending events acknowledged in the last %.0f s", self.settings.redeliver_window_s)
        records = [r for t, r in list(self._recent) if t >= since - self.settings.redeliver_window_s]
        self._recent.clear()
        self._recent_bytes = 0
        if records:
            failed = self._send(records)
            self._bump("redelivered", len(records) - len(failed))
            self._spool_records(failed)
