"""The main job (``flywheel demo``): broker → consumer → replay of the real data → lake → report."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from feedback.bus.broker import EmbeddedBroker
from feedback.config import HomeSettings, IngestSettings
from feedback.ingest.lag import wait_until_caught_up
from feedback.lake.catalog import open_catalog
from feedback.lake.read import lake_connection
from feedback.replay.run import replay
from feedback.replay.sources import default_data_dir
from feedback.report import build_report, format_report


def start_consumer(home: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Run ``flywheel ingest`` as a child process logging to ``<home>/ingest/ingest.log``."""
    (home / "ingest").mkdir(parents=True, exist_ok=True)
    log = open(home / "ingest" / "ingest.log", "ab")
    return subprocess.Popen([sys.executable, "-m", "feedback.cli", "ingest"], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})}, start_new_session=True)


def stop_process(proc: subprocess.Popen, timeout_s: float = 30.0) -> None:
    """SIGTERM (the consumer finishes its batch), then SIGKILL after ``timeout_s``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_demo(sources: list[str], data_dir: Path | None, *, keep_running: bool, echo: Callable[[str], None]) -> None:
    """Run the main job end to end and print what landed (see module doc)."""
    from feedback.cli import kafka_settings

    home = HomeSettings().home
    kafka = kafka_settings()
    broker = EmbeddedBroker()
    status = broker.start(kafka)
    echo(f"broker: Tansu on {status.bootstrap_servers} (pid {status.pid}); lake: {home}")
    consumer = start_consumer(home)
    try:
        data_dir = data_dir or default_data_dir()
        echo(f"replaying {', '.join(sources)} from {data_dir} ...")
        result = replay(sources, data_dir, kafka)
        st = result.sdk_stats
        echo(f"sent {result.total} events in {result.seconds:.1f}s ({result.total / result.seconds:.0f}/s); "
             f"delivered {st['delivered']}, invalid {st['invalid']}, errors {st['errors']}")
        t0 = time.monotonic()
        wait_until_caught_up(kafka, IngestSettings().group_id, st["delivered_offsets"], timeout_s=600)
        echo(f"lake caught up (consumer lag 0) {time.monotonic() - t0:.1f}s after the last send\n")
        echo(format_report(build_report(lake_connection(open_catalog()))))
    finally:
        if not keep_running:
            stop_process(consumer)
            broker.stop()
            echo("\nbroker and consumer stopped; the lake stays in " + str(home))
        else:
            echo(f"\nconsumer pid {consumer.pid} and broker keep running (flywheel broker stop to end)")
