"""Run the Streamlit server on the dashboard (``flywheel dashboard``, and the main job)."""

from __future__ import annotations

import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from dashboards.config import DashboardSettings
from dashboards.errors import DashboardError

APP = Path(__file__).with_name("app.py")


def command(settings: DashboardSettings | None = None) -> list[str]:
    """``python -m streamlit run dashboards/app.py`` with the host, port and headless options."""
    settings = settings or DashboardSettings()
    return [sys.executable, "-m", "streamlit", "run", str(APP), "--server.address", settings.host,
            "--server.port", str(settings.port), "--server.headless", "true",
            "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
            "--client.toolbarMode", "viewer"]


def url(settings: DashboardSettings | None = None) -> str:
    """The dashboard's address, e.g. ``http://127.0.0.1:8501``."""
    settings = settings or DashboardSettings()
    return f"http://{settings.host}:{settings.port}"


def wait_ready(address: str, timeout_s: float = 60.0) -> float:
    """Block until Streamlit's health endpoint answers ``ok``; return the seconds waited.
    Raises DashboardError on timeout."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        try:
            with urllib.request.urlopen(f"{address}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise DashboardError(f"the dashboard did not answer at {address} within {timeout_s:.0f}s")
