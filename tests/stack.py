"""A real, isolated Flywheel stack for tests: Tansu on a free port, a SQLite catalog and warehouse
in a temporary folder, consumers in-process (thread) or as ``flywheel ingest`` child processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from feedback.bus.broker import EmbeddedBroker
from feedback.config import BrokerSettings, HomeSettings, IngestSettings, KafkaSettings, KpiSettings, LakeSettings, SDKSettings
from feedback.ingest.consumer import IngestConsumer
from feedback.kpi.maintainer import KpiMaintainer
from feedback.lake.catalog import open_catalog
from feedback.lake.read import lake_connection
from feedback.sdk.client import FlywheelClient


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Stack:
    home: Path
    port: int = field(default_factory=free_port)
    group_id: str = "flywheel-ingest"

    def __post_init__(self) -> None:
        self.home_settings = HomeSettings(home=self.home)
        self.kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{self.port}")
        self.broker = EmbeddedBroker(BrokerSettings(port=self.port), self.home_settings)
        self.lake = LakeSettings()
        self.env = {"FLYWHEEL_HOME": str(self.home), "FLYWHEEL_KAFKA_BOOTSTRAP_SERVERS": self.kafka.bootstrap_servers,
                    "FLYWHEEL_BROKER_PORT": str(self.port), "FLYWHEEL_INGEST_GROUP_ID": self.group_id}
        self.procs: list[subprocess.Popen] = []

    def start_broker(self) -> None:
        self.broker.start(self.kafka)

    def ingest_settings(self, **overrides) -> IngestSettings:
        return IngestSettings(group_id=self.group_id, **overrides)

    def consumer(self, **overrides) -> IngestConsumer:
        return IngestConsumer(self.kafka, self.ingest_settings(**overrides), self.lake, self.home_settings)

    def consumer_thread(self, **overrides) -> tuple[IngestConsumer, threading.Thread]:
        consumer = self.consumer(**overrides)
        thread = threading.Thread(target=consumer.run, daemon=True)
        thread.start()
        return consumer, thread

    def consumer_process(self, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        return self.cli_process(["ingest"], extra_env)

    def cli_process(self, args: list[str], extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        """``flywheel <args>`` as a child process on this stack (log in the stack's home)."""
        self.home.mkdir(parents=True, exist_ok=True)
        log = open(self.home / f"{args[0]}-{len(self.procs)}.log", "ab")
        proc = subprocess.Popen([sys.executable, "-m", "feedback.cli", *args], stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, **self.env, **(extra_env or {})})
        self.procs.append(proc)
        return proc

    @contextmanager
    def live_pipeline(self, kpi: KpiSettings | None = None, **ingest_overrides):
        """Consumer and KPI follower running in threads; yields (consumer, maintainer), stops both."""
        consumer, consumer_thread = self.consumer_thread(**ingest_overrides)
        maintainer = KpiMaintainer(self.catalog(), self.lake, kpi or KpiSettings())
        stop = threading.Event()
        follower = threading.Thread(target=maintainer.follow, kwargs={"stop": stop}, daemon=True)
        follower.start()
        try:
            yield consumer, maintainer
        finally:
            stop.set()
            consumer.stop()
            follower.join(30)
            consumer_thread.join(30)

    def client(self, **overrides) -> FlywheelClient:
        settings = SDKSettings(spool_dir=self.home / "spool", **overrides)
        return FlywheelClient(settings, self.kafka, self.home_settings)

    def catalog(self):
        return open_catalog(self.lake, self.home_settings)

    def sql(self) -> duckdb.DuckDBPyConnection:
        return lake_connection(self.catalog(), self.lake)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.broker.stop()
