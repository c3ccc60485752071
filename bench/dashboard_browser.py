"""Overview in a real browser: time to the first KPI tile and to all four charts, per page load.

Serves ``flywheel dashboard`` on the lake of ``FLYWHEEL_HOME`` (run the main job first, e.g.
``flywheel demo --no-serve``), then loads the Overview ``--loads`` times in Debian's chromium
through Playwright, each in a fresh browser context (no cached assets), and reports each load.
Baselines in the same run, served by the same Streamlit: an empty page (one metric: Streamlit's
own start-up), and a synthetic page with the Overview's elements (sidebar of 5 selects, 8 metrics,
4 Altair line charts of 120 points) and static data: the front end's cost of those elements. The
ratio Overview / synthetic is what Flywheel's own work (queries, lake sync, banner) adds.

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


EMPTY = "import streamlit as st\nst.metric('baseline', 1)\n"
SYNTHETIC = """import altair as alt, pandas as pd, streamlit as st
st.set_page_config(layout="wide")
for i in range(5):
    st.sidebar.selectbox(f"filter {i}", ["(all)", "a", "b"])
st.title("Overview")
for _ in range(2):
    for col in st.columns(4):
        col.metric("metric", "76.6%", "+1.0 pp", border=True, help="help")
frame = pd.DataFrame({"window_start": pd.date_range("2023-01-01", periods=120), "value": [i % 7 / 7 for i in range(120)]})
left, right = st.columns(2)
for i in range(4):
    (left if i % 2 == 0 else right).altair_chart(alt.Chart(frame).mark_line(point=True).encode(x="window_start:T", y="value:Q"))
"""


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
    baselines = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, source, charts in (("empty", EMPTY, 0), ("synthetic", SYNTHETIC, 4)):
            script = Path(tmp) / f"{name}.py"
            script.write_text(source)
            port = free_port()
            base = serve([sys.executable, "-m", "streamlit", "run", str(script), "--server.headless", "true",
                          "--browser.gatherUsageStats", "false", "--server.address", "127.0.0.1",
                          "--server.port", str(port), "--client.toolbarMode", "viewer"], port)
            try:
                baselines[name] = loads(f"http://127.0.0.1:{port}/", opts.loads, "stMetric", charts)
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
    synth = {k: statistics.median(r[k] for r in baselines["synthetic"]) for k in ("first_s", "all_s")}
    result = {"baseline_empty_page_first_s": statistics.median(r["first_s"] for r in baselines["empty"]),
              "baseline_synthetic_median": synth, "baseline_synthetic": baselines["synthetic"],
              "overview_cold": cold, "overview_warm": warm, "overview_warm_median": med,
              "ratio_all_charts_vs_synthetic": round(med["all_s"] / synth["all_s"], 2),
              "target_all_charts_s": 2.0, "met": med["all_s"] < 2.0}
    print(json.dumps(result, indent=2))
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"dashboard_browser_{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
