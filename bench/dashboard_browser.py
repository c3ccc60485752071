"""Overview in a real browser: time to the first KPI tile and to all four charts, per page load.

Serves ``flywheel dashboard`` on the lake of ``FLYWHEEL_HOME`` (run the main job first, e.g.
``flywheel demo --no-serve``), then loads the Overview ``--loads`` times in Debian's chromium
through Playwright, each in a fresh browser context (no cached assets), and reports each load.
Baseline in the same run: an empty Streamlit page served by the same server build (the cost of
Streamlit's own front end), so the ratio is the dashboard's own share.

    . .venv/bin/activate && FLYWHEEL_HOME=/tmp/fwlake python bench/dashboard_browser.py --loads 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from playwright.sync_api import expect, sync_playwright  # noqa: E402

from dashboards.server import wait_ready  # noqa: E402

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(args: list[str], port: int) -> subprocess.Popen:
    proc = subprocess.Popen(args, env={**os.environ, "FLYWHEEL_DASHBOARD_PORT": str(port)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    wait_ready(f"http://127.0.0.1:{port}", 90)
    return proc


def loads(url: str, n: int, ready: str, charts: int) -> list[dict]:
    out = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium", args=ARGS)
        for _ in range(n):
            context = browser.new_context(viewport={"width": 1500, "height": 1900})
            page = context.new_page()
            started = time.perf_counter()
            page.goto(url)
            expect(page.get_by_test_id(ready).first).to_be_visible(timeout=60_000)
            first = time.perf_counter() - started
            if charts:
                expect(page.locator('[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg.marks')
                       ).to_have_count(charts, timeout=60_000)
            out.append({"first_s": round(first, 3), "all_s": round(time.perf_counter() - started, 3)})
            context.close()
        browser.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--loads", type=int, default=5)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty.py"
        empty.write_text("import streamlit as st\nst.metric('baseline', 1)\n")
        port = free_port()
        base = serve([sys.executable, "-m", "streamlit", "run", str(empty), "--server.headless", "true",
                      "--browser.gatherUsageStats", "false", "--server.address", "127.0.0.1", "--server.port", str(port)], port)
        try:
            baseline = loads(f"http://127.0.0.1:{port}/", opts.loads, "stMetric", 0)
        finally:
            base.terminate()
    port = free_port()
    dash = serve([sys.executable, "-m", "feedback.cli", "dashboard", "--port", str(port)], port)
    try:
        overview = loads(f"http://127.0.0.1:{port}/?range=all", opts.loads + 1, "stMetric", 4)
    finally:
        dash.terminate()
    cold, warm = overview[0], overview[1:]
    med = {k: statistics.median(r[k] for r in warm) for k in ("first_s", "all_s")}
    base_first = statistics.median(r["first_s"] for r in baseline)
    result = {"baseline_empty_page_first_s": base_first, "overview_cold": cold, "overview_warm": warm,
              "overview_warm_median": med, "ratio_first_vs_baseline": round(med["first_s"] / base_first, 2),
              "target_all_charts_s": 2.0, "met": med["all_s"] < 2.0}
    print(json.dumps(result, indent=2))
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"dashboard_browser_{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
