"""The audit page's specialists view: the per-specialist table per workflow and the inline SVG
chart of first-try adherence and escalation over time — served HTML, JSON, and in Chromium."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from playwright.sync_api import Page, expect

from flotilla.audit import semconv as sc
from flotilla.audit.exporter import AuditSpanExporter
from flotilla.audit.sanitize import Sanitizer
from flotilla.audit.store import AuditStore
from flotilla.audit.web import create_audit_app
from tests.audit.factory import sync_telemetry
from tests.audit.test_browser import page  # noqa: F401 — the Chromium fixture
from tests.audit.web_fixtures import TOKEN

DAY_NS = 86_400 * 10**9
# Per day, oldest first: (steps, first tries in schema, escalated to the frontier)
DAYS = [(4, 2, 2), (4, 3, 1), (4, 4, 0)]


def record_steps(store: AuditStore) -> None:
    """Agent steps of `document_triage` over the last three days, through a real tracer and exporter."""
    tel = sync_telemetry([AuditSpanExporter(store, Sanitizer("off"))])
    tracer = tel.tracer
    now = time.time_ns()
    for day, (steps, valid, escalated) in enumerate(DAYS):
        start = now - (len(DAYS) - 1 - day) * DAY_NS - 3600 * 10**9
        for i in range(steps):
            attrs = {sc.OPERATION: "invoke_agent", sc.AGENT_NAME: "extract", sc.WORKFLOW: "document_triage", sc.RUN_ID: f"run-{day}-{i}",
                     sc.MODEL_ALIAS: "specialist-extract", "gen_ai.request.model": "smollm2-135m",
                     sc.STEP_FIRST_TRY_VALID: i < valid, sc.STEP_REPAIRS: int(i >= valid), sc.STEP_VERIFIED: 1, sc.STEP_VERIFIED_PASSED: 1,
                     sc.STEP_ESCALATED: i < escalated, sc.STEP_TIER: "frontier" if i < escalated else "specialist-extract"}
            t = start + i * 10**9
            tracer.start_span("invoke_agent extract", start_time=t, attributes=attrs).end(end_time=t + (100 + 10 * i) * 10**6)
    tel.shutdown()


@pytest.fixture
def app(sqlite_store: AuditStore) -> FastAPI:
    record_steps(sqlite_store)
    root = FastAPI()
    root.mount("/audit", create_audit_app(sqlite_store, TOKEN))
    return root


def test_the_specialists_page_serves_the_table_and_an_inline_svg_chart(app: FastAPI) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with TestClient(app) as client:
        assert client.get("/audit/stats", follow_redirects=False).status_code == 303  # signed out: to the sign-in page
        html = client.get("/audit/stats?since=7d&by=day", headers=auth).text
        assert client.get("/audit/stats?since=soon", headers=auth).status_code == 400
        api = client.get("/audit/api/stats?workflow=document_triage&since=7d", headers=auth).json()
    assert '<svg class="trend"' in html and "<script" not in html.split('<svg class="trend"')[1].split("</svg>")[0]
    assert html.count('<polyline fill="none"') == 2  # adherence and escalation, one point per day
    assert 'data-testid="stats-row"' in html and "specialist-extract" in html
    [row] = api
    assert row["requests"] == 12 and row["first_try_valid"] == 9 and row["escalated_to"] == {"frontier": 3}
    assert row["first_try_rate"] == pytest.approx(0.75) and row["escalation_rate"] == pytest.approx(0.25)


@pytest.fixture
def server(app: FastAPI) -> Iterator[str]:
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not (srv.started and srv.servers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{srv.servers[0].sockets[0].getsockname()[1]}/audit/"
    srv.should_exit = True
    thread.join(timeout=10)


def test_the_chart_renders_in_chromium(server: str, page: Page, output_dir: Path) -> None:  # noqa: F811
    page.goto(server + "stats?since=7d")
    page.get_by_test_id("token").fill(TOKEN)
    page.get_by_role("button", name="Open").click()
    chart = page.get_by_test_id("trend-chart")
    expect(chart).to_be_visible()
    box = chart.bounding_box()
    assert box is not None and box["width"] > 300 and box["height"] > 80
    # Three days, both series drawn: three dots each, the adherence line rising as escalation falls.
    expect(page.locator('circle[data-series="first_try_rate"]')).to_have_count(3)
    expect(page.locator('circle[data-series="escalation_rate"]')).to_have_count(3)
    ys = [float(page.locator('circle[data-series="first_try_rate"]').nth(i).get_attribute("cy") or 0) for i in range(3)]
    assert ys[0] > ys[1] > ys[2]  # SVG y grows downward: 50 % → 75 % → 100 %
    expect(page.get_by_test_id("stats-row")).to_have_count(1)
    page.screenshot(path=str(output_dir / "audit-specialists.png"), full_page=True)
