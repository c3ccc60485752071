"""Consumer lag measured against offsets the producer saw acknowledged.

Tansu's ``end_offsets`` under-reports the high watermark, so lag is measured from the other side:
the SDK records the highest acknowledged offset per partition, and the lake has caught up when the
consumer group's committed offset (committed only after the lake commit) is past it.
"""

from __future__ import annotations

import time

from feedback.bus.kafka import committed_offsets
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
