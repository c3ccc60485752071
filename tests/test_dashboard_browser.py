"""The dashboard in a real browser: ``flywheel dashboard`` serving the replayed real data, driven by
Playwright through Debian's chromium (no browser download). Opens the Overview, changes a filter,
drills down to the answers behind a KPI slice and into one conversation, and saves screenshots
(to ``$FLYWHEEL_SCREENSHOT_DIR`` if set) with the Overview's time to first paint and to all charts."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from dashboards.server import wait_ready
from feedback.config import KpiSettings
from feedback.kpi.maintainer import KpiMaintainer
from tests.stack import free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def served(lake, tmp_path_factory):
    """``flywheel dashboard`` on a free port over the real-data lake; yields (stack, url)."""
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is needed for the browser test: apt-get install -y chromium "
                    "(scripts/test.sh installs it when run as root)")
    stack, _ = lake
    KpiMaintainer(stack.catalog(), stack.lake, KpiSettings()).refresh()
    port = free_port()
    log = open(tmp_path_factory.mktemp("dash") / "dashboard.log", "wb")
    env = {**os.environ, **stack.env, "FLYWHEEL_DASHBOARD_PORT": str(port), "FLYWHEEL_DASHBOARD_LAG_TIMEOUT_S": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "feedback.cli", "dashboard"], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, timeout_s=90)
        yield stack, url
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.fixture
def screenshots(tmp_path) -> Path:
    out = Path(os.environ.get("FLYWHEEL_SCREENSHOT_DIR") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    return out


def test_overview_filter_drill_down_and_transcript_in_a_real_browser(served, screenshots):
    stack, url = served
    lake = stack.sql()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1500, "height": 1900})
        # warm the server's caches and DuckDB's extension load once, as a returning user would find it
        page.goto(f"{url}/?range=all")
        expect(page.get_by_test_id("stMetric").first).to_be_visible(timeout=60_000)

        started = time.perf_counter()
        page.goto(f"{url}/?range=all")
        expect(page.get_by_test_id("stMetric").first).to_be_visible(timeout=30_000)
        first_paint_s = time.perf_counter() - started
        charts = page.locator('[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg.marks')
        expect(charts).to_have_count(4, timeout=30_000)
        all_charts_s = time.perf_counter() - started
        expect(page.get_by_test_id("stMetric")).to_have_count(8)
        total = lake.execute("SELECT count(*) FROM interactions").fetchone()[0]
        expect(page.get_by_test_id("stMetric").first).to_contain_text(f"{total:,}")
        page.screenshot(path=str(screenshots / "overview.png"), full_page=True)

        # a filter: model = tulu_65B, through the sidebar select; the URL carries it
        page.get_by_test_id("stSidebar").get_by_test_id("stSelectbox").filter(has_text="Model").click()
        page.get_by_role("option", name="tulu_65B", exact=True).click()
        page.wait_for_url("**model=tulu_65B**", timeout=30_000)
        expect(page.get_by_test_id("stMetric").first).to_contain_text("262", timeout=30_000)
        page.screenshot(path=str(screenshots / "overview_tulu_65B.png"), full_page=True)

        # drill down: the tulu_65B answers behind the thumbs-up rate that got a thumbs-down
        links = page.get_by_role("link", name="With a thumbs-down")
        expect(links).to_have_count(1, timeout=30_000)  # the drill-down list now holds tulu_65B alone
        links.click()
        page.wait_for_url("**/conversations?**signal=thumb_down**", timeout=30_000)
        down = lake.execute("""SELECT count(DISTINCT i.message_id) FROM interactions i JOIN feedback f USING (message_id)
                               WHERE i.model = 'tulu_65B' AND f.thumb = 'down'""").fetchone()[0]
        expect(page.get_by_text(f"{down:,} answers match")).to_be_visible(timeout=30_000)

        # into one conversation: the newest of them, opened by its id
        conversation = lake.execute("""SELECT i.conversation_id FROM interactions i JOIN feedback f USING (message_id)
                                       WHERE i.model = 'tulu_65B' AND f.thumb = 'down'
                                       ORDER BY i.occurred_at DESC, i.message_id LIMIT 1""").fetchone()[0]
        box = page.get_by_label("Open a conversation by id")
        box.fill(conversation)
        box.press("Enter")
        expect(page.get_by_role("heading", name=f"Conversation {conversation}")).to_be_visible(timeout=30_000)
        expect(page.get_by_test_id("stChatMessage").first).to_be_visible()
        assert "conversation=" in page.url
        page.screenshot(path=str(screenshots / "conversation.png"), full_page=True)
        browser.close()
    timings = {"overview_first_metric_s": round(first_paint_s, 2), "overview_all_charts_s": round(all_charts_s, 2)}
    (screenshots / "timings.json").write_text(json.dumps(timings))
    print(timings)
