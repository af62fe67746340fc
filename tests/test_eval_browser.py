"""The eval's HTML report in a real browser (Debian's Chromium via Playwright): self-contained,
nothing fetched, and every chart drawn from the eval's figures."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from tests.eval_support import CASES, flotilla, scripted_server, write_configs
from tests.support.servers import serve_app

CHROMIUM = os.environ.get("FLOTILLA_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-sync"]
OUTPUT = Path(__file__).resolve().parents[1] / "test-output"


@pytest.fixture
def report_html(tmp_path: Path) -> tuple[Path, dict]:
    server = scripted_server()
    with serve_app(server.app()) as url:
        configs = write_configs(tmp_path, url)
        proc = flotilla(
            tmp_path, "eval", "document_triage", "--dataset", str(CASES), "--config", str(configs["good"]), "--config", str(configs["cascade"]),
            "--out", "out", "--html", "report/eval.html", "--json",
        )
    assert proc.returncode == 0, proc.stderr.decode()
    return tmp_path / "report" / "eval.html", json.loads(proc.stdout)


def test_report_charts_render_offline_in_chromium(report_html: tuple[Path, dict]) -> None:
    path, report = report_html
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: run `make setup-test` (apt package chromium)")
    requested: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.on("request", lambda request: requested.append(request.url))
        page.goto(path.as_uri())
        # Accuracy vs cost: one point per config, the cheaper config to the left at the same accuracy.
        points = page.locator("#chart-accuracy-cost circle.point")
        assert points.count() == 2
        good = points.and_(page.locator("[data-config=good]"))
        cascade = points.and_(page.locator("[data-config=cascade]"))
        assert float(good.get_attribute("cx")) < float(cascade.get_attribute("cx"))
        assert good.get_attribute("cy") == cascade.get_attribute("cy")
        assert good.bounding_box()["width"] > 0  # laid out and visible, not just in the markup
        # Latency: one dot per case and config.
        assert page.locator("#chart-latency circle.latency").count() == 8
        # Per-field accuracy: a bar per (field, config), widths from the figures.
        fields = report["summary"]["good"]["fields"]
        bars = page.locator("#chart-fields rect.bar")
        assert bars.count() == 2 * len(fields)
        total_bar = page.locator('#chart-fields rect.bar[data-config=good][data-field="extract.total"]')
        assert float(total_bar.get_attribute("width")) > 0 and total_bar.bounding_box()["width"] > 0
        assert page.locator("#summary").get_by_text("quality per dollar").is_visible()
        OUTPUT.mkdir(exist_ok=True)
        page.screenshot(path=str(OUTPUT / "eval-report.png"), full_page=True)
        browser.close()
    assert requested == [path.as_uri()]  # self-contained: nothing else fetched
