"""``flywheel replay``: send the events of real data sets through Kafka with the SDK."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from feedback.config import HomeSettings, KafkaSettings, SDKSettings
from feedback.replay.sources import iter_events
from feedback.sdk.client import FlywheelClient


@dataclass
class ReplayResult:
    """Events handed to the SDK per (source, event_type), the SDK's final counters and wall time."""

    produced: Counter = field(default_factory=Counter)
    sdk_stats: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.produced.values())


def replay(names: list[str], data_dir: Path, kafka: KafkaSettings, *, project: str = "default",
           home: HomeSettings | None = None, sdk: SDKSettings | None = None) -> ReplayResult:
    """Map each named source to events and send them; returns after every event is acknowledged
    or spooled. Event time is the source's own timestamp; sources without one use the replay's
    start time (marked ``event_time_source: replay`` in the event metadata)."""
    started = time.monotonic()
    result = ReplayResult()
    settings = sdk or SDKSettings(project=project)
    client = FlywheelClient(settings=settings, kafka=kafka, home=home, source="replay")
    try:
        for source, event in iter_events(names, data_dir, project=project, replay_time=datetime.now(UTC)):
            client.log_event(event)
            result.produced[(source, event["event_type"])] += 1
    finally:
        client.close(timeout_s=120)
    result.sdk_stats = client.stats()
    result.seconds = time.monotonic() - started
    return result
