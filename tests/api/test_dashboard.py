"""The dashboard in headless Chromium (Debian's package), against the API on a real socket:
enter a token, search a meter, see its consumption chart drawn, take a screenshot.

Set METERGATE_SCREENSHOT_DIR to keep the screenshots somewhere to look at."""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ingest.boundaries import last_closed_period
from tests.api import seed
from tests.api.server import Server

pytestmark = pytest.mark.timeout(180)

CHROMIUM = "/usr/bin/chromium"

if not Path(CHROMIUM).exists():
    pytest.skip(
        f"{CHROMIUM} is missing: the dashboard test needs Debian's chromium package"
        " (apt-get install -y chromium)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def base_url(server: Server, db: psycopg.Connection[Any]) -> str:
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    seed.meter(db, "KAM-70000001", premise="Flat 12", address="Terbatas iela 5, Riga")
    seed.hourly(db, "KAM-70000001", now - timedelta(days=3), now, start="250.000", per_hour="0.012")
    seed.meter(db, "KAM-70000002", premise="Flat 14", address="Terbatas iela 5, Riga",
               next_verification_due=now.date() + timedelta(days=20))  # fmt: skip
    seed.alert(db, "KAM-70000002", "night_flow", now - timedelta(days=1), rule="night_flow")
    seed.monthly(db, "KAM-70000001", last_closed_period(now), "249.100", "interpolated")
    return server.url


def test_search_a_meter_and_see_its_chart(
    base_url: str, tokens: dict[str, str], tmp_path: Path
) -> None:
    errors: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1000})
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"{base_url}/dashboard/")
            page.fill("#token", tokens["-meters:admin"])
            page.click("#token-form button")
            # The overview loads: open alerts, verification due, last month's readings.
            page.wait_for_selector("#alerts tbody tr")
            assert not page.is_visible("#token-form")
            assert page.inner_text("#alerts tbody").startswith("KAM-70000002\tnight_flow")
            page.wait_for_selector("#verification tbody tr")
            assert "KAM-70000002" in page.inner_text("#verification tbody")
            page.wait_for_selector("#billing tbody tr")
            assert "interpolated" in page.inner_text("#billing tbody")
            stored = page.evaluate("[sessionStorage.length, localStorage.length]")
            assert stored == [1, 0]  # the token is kept for the tab only

            page.fill("#search", "terbatas")
            page.click("#search-form button")
            page.wait_for_selector("#results li button")
            assert page.locator("#results li").count() == 2
            page.click("#results li button[data-meter='KAM-70000001']")
            page.wait_for_function("Number(document.getElementById('chart').dataset.bars) > 0")
            assert page.inner_text("#meter-title") == "KAM-70000001"
            assert "Flat 12" in page.inner_text("#meter-facts")

            page.check("input[name=bucket][value=hour]")
            page.wait_for_function("document.getElementById('chart').dataset.buckets === '48'")
            bars = int(page.get_attribute("#chart", "data-bars") or 0)
            assert bars >= 24  # the hours still ahead today have no data yet
            blue = page.evaluate(
                """() => {
                  const c = document.getElementById('chart');
                  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                  let n = 0;
                  for (let i = 0; i < d.length; i += 4) {
                    if (d[i] === 0x1f && d[i + 1] === 0x6f && d[i + 2] === 0xb2) n++;
                  }
                  return n;
                }"""
            )
            assert blue > 1000  # the bars are on the canvas
            assert "48 hour buckets (Europe/Riga)" in page.inner_text("#chart-note")
            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            keep = os.environ.get("METERGATE_SCREENSHOT_DIR")
            if keep:
                shutil.copy(shot, Path(keep) / "dashboard.png")

            page.click("#forget-token")
            assert page.evaluate("sessionStorage.length") == 0
            assert page.is_visible("#token-form")
        finally:
            browser.close()
    assert errors == []


def test_a_wrong_token_is_told(base_url: str) -> None:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(f"{base_url}/dashboard/")
            page.fill("#token", "mg_not-a-real-token")
            page.click("#token-form button")
            page.wait_for_function("document.getElementById('message').textContent !== ''")
            assert page.inner_text("#message").startswith("401: a valid API token is needed")
        finally:
            browser.close()
