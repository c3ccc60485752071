"""The SDK never raises into the host application and loses nothing while the broker is away."""

import threading
import time

from tests.stack import Stack


def lake_event_ids(stack, table="feedback"):
    con = stack.sql()
    return [r[0] for r in con.execute(f"SELECT event_id FROM {table}").fetchall()]


def wait_for(predicate, timeout_s=60.0, step_s=0.2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step_s)
    return False


def test_sdk_never_raises_on_bad_arguments(stack):
    with stack.client() as client:
        assert client.log_interaction(conversation_id="c", prompt=None, response=object(), model="m") is None
        assert client.log_feedback(conversation_id="c", kind="thumb", thumb="sideways") is not None  # sent, quarantined
        assert client.log_metric(message_id="m", name="x", value="NaN-ish") is not None
        stats = client.stats()
    assert stats["errors"] == 1  # the unserialisable response
    assert stats["invalid"] == 2  # thumb "sideways", value not a number: sent for quarantine, counted


def test_oversized_event_is_refused_not_sent(stack):
    with stack.client() as client:
        assert client.log_feedback(conversation_id="c", kind="comment", comment="x" * 1_100_000) is None
        assert client.stats()["rejected_oversized"] == 1


def test_spools_while_broker_is_down_and_delivers_when_it_returns(tmp_path):
    stack = Stack(tmp_path / "fw")  # broker not started
    try:
        client = stack.client(retry_interval_s=0.2)
        ids = [client.log_feedback(conversation_id=f"c{i % 7}", kind="thumb", thumb="up", event_id=f"spool-{i}")
               for i in range(500)]
        assert wait_for(lambda: client.stats()["spooled"] == 500, 30)
        assert any((tmp_path / "fw" / "spool").glob("spool-*.jsonl"))
        stack.start_broker()
        consumer, thread = stack.consumer_thread()
        assert wait_for(lambda: client.stats()["spool_bytes"] == 0, 60), client.stats()
        assert wait_for(lambda: len(lake_event_ids(stack)) == 500, 60)
        consumer.stop()
        thread.join(30)
        client.close()
        assert sorted(lake_event_ids(stack)) == sorted(ids)
    finally:
        stack.close()


def test_full_spool_says_so_and_counts_the_drops(tmp_path):
    stack = Stack(tmp_path / "fw")  # no broker
    client = stack.client(spool_max_bytes=20_000, retry_interval_s=0.2)
    for i in range(400):
        client.log_feedback(conversation_id="c", kind="comment", comment=f"comment number {i}", event_id=f"full-{i}")
    assert wait_for(lambda: client.stats()["spooled"] + client.stats()["dropped_spool_full"] == 400, 30)
    stats = client.stats()
    assert stats["spool_full"] is True
    assert stats["dropped_spool_full"] > 0 and stats["spooled"] > 0
    assert stats["spool_bytes"] <= 20_000
    client.close(timeout_s=1)


def test_broker_restart_while_sending_loses_nothing(stack):
    """Tansu keeps data in memory: a restart drops acknowledged-but-unconsumed events, which the
    SDK sends again; the consumer drops the duplicates."""
    consumer, thread = stack.consumer_thread()
    client = stack.client(retry_interval_s=0.2, send_timeout_s=3.0)
    n = 4000

    def emit():
        for i in range(n):
            client.log_feedback(conversation_id=f"c{i % 40}", kind="thumb", thumb="up" if i % 3 else "down",
                                event_id=f"restart-{i}")
            time.sleep(0.0015)

    sender = threading.Thread(target=emit)
    sender.start()
    time.sleep(2.0)
    delivered_before_stop = client.stats()["delivered"]
    stack.broker.stop()
    time.sleep(4.0)  # longer than the SDK's send timeout: events spool to disk
    stack.start_broker()
    sender.join()
    assert client.flush(60)
    assert wait_for(lambda: len(set(lake_event_ids(stack))) == n and client.stats()["spool_bytes"] == 0, 90), client.stats()
    time.sleep(2)  # let redelivered duplicates arrive too
    consumer.stop()
    thread.join(30)
    client.close()
    ids = lake_event_ids(stack)
    assert len(ids) == n and set(ids) == {f"restart-{i}" for i in range(n)}
    assert 0 < delivered_before_stop < n  # the broker really went away mid-stream


def test_events_lost_by_a_broker_restart_are_redelivered(stack):
    """Deterministic: 200 events are acknowledged while no consumer runs, the memory-only broker
    restarts (they are gone), the next send sees the partition offsets go backwards, and the SDK
    re-sends its recent window, so the lake still gets all 201."""
    client = stack.client(retry_interval_s=0.2)
    for i in range(200):
        client.log_feedback(conversation_id="c-same", kind="thumb", thumb="up", event_id=f"lost-{i}")
    assert client.flush(30) and client.stats()["delivered"] == 200
    stack.broker.stop()
    stack.start_broker()
    client.log_feedback(conversation_id="c-same", kind="thumb", thumb="down", event_id="after-restart")
    assert client.flush(30)
    assert wait_for(lambda: client.stats()["redelivered"] >= 200, 30), client.stats()
    consumer, thread = stack.consumer_thread()
    assert wait_for(lambda: len(set(lake_event_ids(stack))) == 201, 60)
    consumer.stop()
    thread.join(30)
    client.close()
    ids = lake_event_ids(stack)
    assert len(ids) == 201 and set(ids) == {f"lost-{i}" for i in range(200)} | {"after-restart"}
