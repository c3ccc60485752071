"""Freshness on the real broker: a feedback event emitted now shows in its KPI table within the
refresh interval plus one ingest batch, and the watermark advances; a late rating updates its old
window."""

import time
from datetime import UTC, datetime, timedelta

from feedback.config import KpiSettings
from feedback.kpi.maintainer import KpiMaintainer
from feedback.kpi.query import KpiFilter, kpi_connection, query


def wait_for(predicate, timeout_s=30.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    return None


def thumbs(stack, model, grain="total", start=None):
    rows = query(kpi_connection(stack.catalog(), stack.lake), "thumbs_up_rate", grain, ["model"],
                 KpiFilter(start=start, dims={"model": model}))
    return rows[0].n if rows else 0


def test_feedback_reaches_its_kpi_within_the_interval_and_the_watermark_advances(stack):
    with stack.live_pipeline(KpiSettings(refresh_interval_s=0.2), batch_max_ms=100), \
            stack.client(flush_interval_ms=20) as client:
        msg = client.log_interaction(conversation_id="fresh-1", prompt=[{"role": "user", "content": "hi"}],
                                     response="hello", model="fresh-model", app="freshness")
        client.log_feedback(conversation_id="fresh-1", message_id=msg, kind="thumb", thumb="up")
        assert wait_for(lambda: thumbs(stack, "fresh-model") == 1, 60), "first thumb never reached the KPI table"
        state_before = KpiMaintainer.state(stack.catalog().load_table("flywheel.kpi_feedback"))

        emitted = time.monotonic()
        client.log_feedback(conversation_id="fresh-1", message_id=msg, kind="thumb", thumb="down")
        assert wait_for(lambda: thumbs(stack, "fresh-model") == 2, 30)
        elapsed = time.monotonic() - emitted
        # group already joined: one ingest batch (0.1 s) + commit + one refresh interval (0.2 s) + refresh
        assert elapsed < 10, f"took {elapsed:.1f}s"
        state_after = KpiMaintainer.state(stack.catalog().load_table("flywheel.kpi_feedback"))
        assert state_after["watermark"] > state_before["watermark"]

        # a rating arriving now for an answer given three days ago updates that day's window
        old_day = datetime.now(UTC) - timedelta(days=3)
        old = client.log_interaction(conversation_id="fresh-2", prompt=[{"role": "user", "content": "q"}],
                                     response="a", model="fresh-model", app="freshness", occurred_at=old_day)
        client.log_feedback(conversation_id="fresh-2", message_id=old, kind="thumb", thumb="up")
        start = old_day.replace(hour=0, minute=0, second=0, microsecond=0)
        assert wait_for(lambda: query(kpi_connection(stack.catalog(), stack.lake), "thumbs_up_rate", "day", ["model"],
                                      KpiFilter(start=start, end=start + timedelta(days=1),
                                                dims={"model": "fresh-model"})), 30)
