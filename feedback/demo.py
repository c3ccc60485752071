"""The main job (``flywheel demo``): broker → consumer → replay of the real data → lake → KPIs →
dashboard (served on the live pipeline until Ctrl-C, unless ``serve`` is off)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from feedback.bus.broker import EmbeddedBroker
from feedback.config import HomeSettings, IngestSettings, kafka_settings
from feedback.ingest.lag import wait_until_caught_up
from feedback.lake.catalog import open_catalog
from feedback.lake.read import lake_connection
from feedback.replay.run import replay
from feedback.replay.sources import default_data_dir
from feedback.report import build_report, format_report


def start_child(home: Path, args: list[str], log_name: str) -> subprocess.Popen:
    """Run ``flywheel <args>`` as a child process logging to ``<home>/logs/<log_name>``."""
    (home / "logs").mkdir(parents=True, exist_ok=True)
    log = open(home / "logs" / log_name, "ab")
    return subprocess.Popen([sys.executable, "-m", "feedback.cli", *args], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env=dict(os.environ), start_new_session=True)


def kpi_summary(catalog) -> str:
    """Headline KPIs per model from the KPI tables, with 95 % intervals and low-n flags."""
    from feedback.kpi.query import kpi_connection, query
    from feedback.report import format_table

    con = kpi_connection(catalog)
    parts = []
    for name in ("interactions", "feedback_coverage", "thumbs_up_rate", "mean_rating", "win_rate", "negative_comment_share"):
        rows = [r for r in query(con, name, "total", ["model"]) if r.value is not None and (r.n is None or r.n > 0)]
        table = [(r.group["model"] or "(no interaction)", r.value, r.ci_low, r.ci_high, r.n, "yes" if r.low_n else "")
                 for r in rows]
        parts += [f"{name}", format_table(["model", "value", "ci_low", "ci_high", "n", "low_n"], table), ""]
    return "\n".join(parts)


def stop_process(proc: subprocess.Popen, timeout_s: float = 30.0) -> None:
    """SIGTERM (the consumer finishes its batch), then SIGKILL after ``timeout_s``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_demo(sources: list[str], data_dir: Path | None, *, keep_running: bool, echo: Callable[[str], None],
             serve: bool = False) -> None:
    """Run the main job end to end and print what landed (see module doc)."""
    home = HomeSettings().home
    kafka = kafka_settings()
    previous_sigterm = signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM stops as cleanly as Ctrl-C
    broker = EmbeddedBroker()
    status = broker.start(kafka)
    echo(f"broker: Tansu on {status.bootstrap_servers} (pid {status.pid}); lake: {home}")
    consumer = start_child(home, ["ingest"], "ingest.log")
    follower = start_child(home, ["kpi", "follow"], "kpi.log")
    dashboard = None
    try:
        data_dir = data_dir or default_data_dir()
        echo(f"replaying {', '.join(sources)} from {data_dir} ...")
        result = replay(sources, data_dir, kafka)
        st = result.sdk_stats
        echo(f"sent {result.total} events in {result.seconds:.1f}s ({result.total / result.seconds:.0f}/s); "
             f"delivered {st['delivered']}, invalid {st['invalid']}, errors {st['errors']}")
        t0 = time.monotonic()
        wait_until_caught_up(kafka, IngestSettings().group_id, st["delivered_offsets"], timeout_s=600)
        echo(f"lake caught up (consumer lag 0) {time.monotonic() - t0:.1f}s after the last send")
        catalog = open_catalog()
        wait_for_kpis(catalog, timeout_s=120, follower=follower, log=home / "logs" / "kpi.log")
        echo(f"KPI tables current {time.monotonic() - t0:.1f}s after the last send\n")
        echo(format_report(build_report(lake_connection(catalog))))
        echo("\nKPIs per model (flywheel kpi show|compare for more)\n")
        echo(kpi_summary(catalog))
        if serve or keep_running:
            dashboard = serve_dashboard(home, echo)
        if serve:
            echo("serving the dashboard on the live pipeline; Ctrl-C stops everything")
            wait_for_interrupt(dashboard)
    except KeyboardInterrupt:
        echo("\ninterrupted")
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)
        if not keep_running:
            if dashboard is not None:
                stop_process(dashboard)
            stop_process(follower)
            stop_process(consumer)
            broker.stop()
            echo("\nbroker, consumer, KPI follower and dashboard stopped; the lake stays in " + str(home))
        else:
            echo(f"\nconsumer (pid {consumer.pid}), KPI follower (pid {follower.pid}), dashboard "
                 f"(pid {dashboard.pid if dashboard else '-'}) and broker keep running")


def serve_dashboard(home: Path, echo: Callable[[str], None]) -> subprocess.Popen:
    """Start ``flywheel dashboard`` as a child process, wait until it answers, print its URL."""
    from dashboards.server import url, wait_ready

    proc = start_child(home, ["dashboard"], "dashboard.log")
    address = url()
    waited = wait_ready(address, timeout_s=120)
    echo(f"\ndashboard: {address}  (ready in {waited:.1f}s; log {home / 'logs' / 'dashboard.log'})")
    return proc


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def wait_for_interrupt(proc: subprocess.Popen) -> None:
    """Block until Ctrl-C/SIGTERM (KeyboardInterrupt) or until ``proc`` exits."""
    while proc.poll() is None:
        time.sleep(0.5)


def wait_for_kpis(catalog, timeout_s: float, follower: subprocess.Popen | None = None, log: Path | None = None) -> None:
    """Block until both KPI tables reflect the lake's current snapshots. Raises LakeError on timeout,
    or at once when the ``follower`` process has exited (its ``log`` is named)."""
    from feedback.config import LakeSettings
    from feedback.errors import LakeError
    from feedback.kpi.maintainer import SOURCES, KpiMaintainer
    from feedback.lake.catalog import load_table_if_exists

    lake = LakeSettings()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if follower is not None and follower.poll() is not None:
            raise LakeError(f"the KPI follower exited with code {follower.returncode}; see {log}")
        current = {s: load_table_if_exists(catalog, lake, s) for s in SOURCES}
        ids = {s: t.current_snapshot().snapshot_id for s, t in current.items() if t is not None and t.current_snapshot()}
        states = [KpiMaintainer.state(t) for t in (load_table_if_exists(catalog, lake, n)
                                                    for n in ("kpi_interactions", "kpi_feedback")) if t is not None]
        if len(states) == 2 and all(st.get("sources") == ids for st in states):
            return
        time.sleep(0.2)
    raise LakeError(f"KPI tables not current after {timeout_s}s; see the KPI follower log")
