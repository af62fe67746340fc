"""The /audit page in-process (FastAPI TestClient), mounted the way `flotilla serve` mounts it."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from flotilla.audit.errors import ConfigError
from flotilla.audit.store import AuditStore
from flotilla.audit.web import create_audit_app
from tests.audit.web_fixtures import TOKEN, fill

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def client(sqlite_store: AuditStore) -> TestClient:
    fill(sqlite_store)
    app = FastAPI()
    app.mount("/audit", create_audit_app(sqlite_store, TOKEN))
    return TestClient(app)


def test_needs_the_audit_token(client: TestClient) -> None:
    page = client.get("/audit/", follow_redirects=False)
    assert page.status_code == 303 and "/audit/login" in page.headers["location"]
    assert client.get("/audit/api/runs").status_code == 401
    assert client.get("/audit/api/runs", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/audit/runs/run-7f3a-ok/export").status_code == 401
    assert client.post("/audit/login", data={"token": "wrong"}).status_code == 401


def test_sign_in_sets_a_cookie_without_the_token(client: TestClient) -> None:
    reply = client.post("/audit/login", data={"token": TOKEN, "next": "/audit/?verdict=block"}, follow_redirects=False)
    assert reply.status_code == 303 and reply.headers["location"] == "/audit/?verdict=block"
    cookie = reply.headers["set-cookie"]
    assert "HttpOnly" in cookie and TOKEN not in cookie and "Path=/audit" in cookie
    page = client.get("/audit/?verdict=block")
    assert page.status_code == 200 and page.text.count('data-testid="run-row"') == 1 and "run-91c2-blocked" in page.text
    # An open redirect is refused.
    away = client.post("/audit/login", data={"token": TOKEN, "next": "//evil.example/"}, follow_redirects=False)
    assert away.headers["location"].endswith("/audit/")


def test_list_filters_and_search(client: TestClient) -> None:
    rows = lambda q: client.get(f"/audit/api/runs{q}", headers=AUTH).json()  # noqa: E731
    assert len(rows("")) == 4
    assert [r["run_id"] for r in rows("?escalated=yes")] == ["run-b5e0-escalated"]
    assert [r["run_id"] for r in rows("?q=claude")] == ["run-91c2-blocked"]
    assert [r["run_id"] for r in rows("?workflow=research")] == ["run-b5e0-escalated"]
    assert client.get("/audit/api/runs?verdict=nope", headers=AUTH).status_code == 400
    first = client.get("/audit/?limit=3", headers=AUTH).text
    assert first.count('data-testid="run-row"') == 3 and 'data-testid="older"' in first
    assert client.get("/audit/?limit=3&offset=3", headers=AUTH).text.count('data-testid="run-row"') == 1
    page = client.get("/audit/?status=succeeded", headers=AUTH).text
    assert page.count('data-testid="run-row"') == 3 and "chain verified" in page


def test_run_page_shows_tree_rails_and_redacted_content(client: TestClient) -> None:
    page = client.get("/audit/runs/run-91c2-blocked", headers=AUTH)
    assert page.status_code == 200
    html = page.text
    assert html.count('data-testid="span-row"') == 1 + 3 + 3 + 1  # workflow, 3 agents, 3 chats, 1 tool
    assert 'class="verdict v-block"' in html and "S7" in html and "frontier" not in html
    assert "&lt;EMAIL_ADDRESS&gt;" in html and "jane.doe@acme.example" not in html
    assert "erp.lookup_vendor" in html and "chain verified" in html
    # Each chat's schema check, a gen_ai.evaluation.result event, is listed under its span.
    assert html.count('data-testid="evaluations"') == 3 and "output_schema" in html
    assert client.get("/audit/runs/nope", headers=AUTH).status_code == 404


def test_export_from_the_page(client: TestClient) -> None:
    reply = client.get("/audit/runs/run-b5e0-escalated/export?format=json", headers=AUTH)
    assert reply.status_code == 200 and 'attachment; filename="flotilla-audit-run-b5e0-escalated.json"' == reply.headers["content-disposition"]
    assert reply.json()["run"]["escalated"] is True
    html = client.get("/audit/runs/run-b5e0-escalated/export?format=html", headers=AUTH).text
    assert "<style>" in html and "frontier-large" in html


def test_broken_chain_is_shown(client: TestClient, sqlite_store: AuditStore) -> None:
    with sqlite_store.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM audit_records WHERE seq = 12"))
    app = FastAPI()
    app.mount("/audit", create_audit_app(sqlite_store, TOKEN))  # a fresh app: no cached status
    client = TestClient(app)
    page = client.get("/audit/", headers=AUTH).text
    assert "chain broken at record 12" in page
    owner = next(r for r in ("run-7f3a-ok", "run-91c2-blocked") if any(rec.seq == 13 for rec in sqlite_store.run_records(r)))
    run_page = client.get(f"/audit/runs/{owner}", headers=AUTH).text
    assert "record 12 is missing" in run_page


def test_refuses_to_start_without_a_token(sqlite_store: AuditStore) -> None:
    with pytest.raises(ConfigError, match="FLOTILLA_AUDIT_TOKEN"):
        create_audit_app(sqlite_store, "")


def test_chain_status_stays_current_as_records_arrive(sqlite_store: AuditStore) -> None:
    from flotilla.audit.store import NewRecord

    fill(sqlite_store)
    app = FastAPI()
    app.mount("/audit", create_audit_app(sqlite_store, TOKEN, chain_ttl_s=0))
    client = TestClient(app)
    total = sqlite_store.count()
    assert client.get("/audit/api/verify", headers=AUTH).json()["checked"] == total
    sqlite_store.append([NewRecord("config", {"change": "tool re-approved", "tool": "erp.lookup_vendor"})])
    status = client.get("/audit/api/verify", headers=AUTH).json()
    assert status["ok"] and status["checked"] == total + 1  # the new record, checked incrementally
    # An edit behind the last checked point is caught by the periodic full check.
    app = FastAPI()
    app.mount("/audit", create_audit_app(sqlite_store, TOKEN, chain_ttl_s=0, full_verify_every_s=0))
    client = TestClient(app)
    assert client.get("/audit/api/verify", headers=AUTH).json()["ok"]
    with sqlite_store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE audit_records SET payload = '{}' WHERE seq = :s"), {"s": total + 1})
    sqlite_store.append([NewRecord("config", {"change": "another"})])
    status = client.get("/audit/api/verify", headers=AUTH).json()
    assert not status["ok"] and status["broken_seq"] == total + 1
