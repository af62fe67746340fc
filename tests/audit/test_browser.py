"""The audit page in a real browser: Debian's Chromium driven by Playwright (no browser download)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI
from playwright.sync_api import Page, expect, sync_playwright

from flotilla.audit.store import AuditStore
from flotilla.audit.web import create_audit_app
from tests.audit.web_fixtures import TOKEN, fill

CHROMIUM = os.environ.get("FLOTILLA_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-sync"]


@pytest.fixture
def server(sqlite_store: AuditStore) -> Iterator[str]:
    fill(sqlite_store)
    app = FastAPI()
    app.mount("/audit", create_audit_app(sqlite_store, TOKEN))
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not (srv.started and srv.servers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    port = srv.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/audit/"
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def page() -> Iterator[Page]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: run `make setup-test` (apt package chromium)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1360, "height": 900}, accept_downloads=True)
        yield context.new_page()
        context.close()
        browser.close()


def test_compliance_officer_reviews_a_blocked_run(server: str, page: Page, output_dir: Path, tmp_path: Path) -> None:
    page.goto(server)
    # Signed out: the page asks for the audit token first.
    expect(page.get_by_test_id("token")).to_be_visible()
    page.get_by_test_id("token").fill(TOKEN)
    page.get_by_role("button", name="Open").click()

    rows = page.get_by_test_id("run-row")
    expect(rows).to_have_count(4)
    expect(page.get_by_test_id("chain-status")).to_contain_text("chain verified")
    page.screenshot(path=str(output_dir / "audit-list.png"), full_page=True)

    # Filter by rail verdict (the drop-down submits by itself).
    page.get_by_test_id("verdict-filter").select_option("block")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("run-91c2-blocked")
    # Search narrows too.
    page.goto(server)
    page.get_by_test_id("search").fill("research")
    page.get_by_test_id("search").press("Enter")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("run-b5e0-escalated")

    # Open the blocked run.
    page.goto(server + "?verdict=block")
    page.get_by_role("link", name="run-91c2-blocked").click()
    expect(page.get_by_test_id("run-id")).to_have_text("run-91c2-blocked")
    spans = page.get_by_test_id("span-row")
    expect(spans).to_have_count(8)
    # The waterfall bars have real geometry, ordered in time.
    bars = page.locator(".wf-bar")
    boxes = [bars.nth(i).bounding_box() for i in range(bars.count())]
    assert all(b is not None and b["width"] >= 1 for b in boxes)
    assert boxes[0]["width"] > boxes[1]["width"]  # the workflow span covers its steps
    # The blocking decision is highlighted and opened for the reader.
    blocked = page.locator("details.wf-row.has-block")
    expect(blocked).to_have_count(1)
    expect(blocked).to_have_attribute("open", "")
    expect(blocked.locator(".verdict.v-block").first).to_be_visible()
    expect(blocked).to_contain_text("privacy violation")
    expect(page.get_by_test_id("rail-table").locator("tr.rail-block")).to_have_count(1)
    # Redacted content only.
    page.get_by_role("button", name="Expand all").click()
    expect(page.locator("main")).to_contain_text("<EMAIL_ADDRESS>")
    expect(page.locator("main")).not_to_contain_text("jane.doe@acme.example")
    expect(page.get_by_test_id("chain-status")).to_contain_text("chain verified")
    page.get_by_role("button", name="Collapse all").click()
    page.locator("details.wf-row.has-block").evaluate("d => d.open = true")
    page.screenshot(path=str(output_dir / "audit-run.png"), full_page=True)

    # Export: one self-contained HTML file.
    with page.expect_download() as download:
        page.get_by_test_id("export-html").click()
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    html = saved.read_text(encoding="utf-8")
    assert saved.name == "flotilla-audit-run-91c2-blocked.html"
    assert "<style>" in html and "llama-guard" in html and "<link" not in html
