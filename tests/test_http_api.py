"""The HTTP run API on `flotilla serve` (/v1/runs), on a real uvicorn server over the real runtime
(run store, checkpointer, audit chain), with the model step answered by a scripted
OpenAI-compatible server: submit → 202 → poll; idempotency keys (also raced); server-sent events;
cancel; approve / reject; bearer tokens with scopes; the OpenAPI schema."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import func, select

from flotilla.audit.errors import ConfigError
from flotilla.audit.runs import runs as runs_table
from flotilla.runtime.serve import create_app
from flotilla.runtime.settings import load_settings
from flotilla.runtime.wiring import configured_secrets
from tests.support.api_flows import GOOD_DECISION, HELD_RELEASE
from tests.support.scripted_openai import Reply, ScriptedOpenAI
from tests.support.servers import serve_app

ALL_TOKEN = "api-token-all-scopes-0001"
ALICE_TOKEN = "api-token-alice-approver-0002"  # read, approve
INTAKE_TOKEN = "api-token-intake-submit-0003"  # submit only
READER_TOKEN = "api-token-reader-only-0004"  # read only
AUDIT_TOKEN = "audit-token-compliance-0005"
INVOICE = "Invoice INV-1 from Acme Ltd, total 12.50 GBP."
FLOWS = "tests.support.api_flows"
TIMEOUT = 120  # the first run loads the rails' models while the machine is shared: slow, not stuck
ENDED = {"succeeded", "needs_review", "failed", "blocked", "cancelled", "interrupted", "waiting_approval"}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with serving(tmp_path, monkeypatch) as both:
        yield both


@contextlib.contextmanager
def serving(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **settings: Any) -> Iterator[tuple[str, Any]]:
    HELD_RELEASE.clear()
    model = ScriptedOpenAI(default=lambda body: Reply(json.dumps(GOOD_DECISION)), model="small")
    with serve_app(model.app()) as model_url:
        endpoint = {"provider": "openai-compatible", "base_url": f"{model_url}/v1", "model": "small", "max_retries": 0}
        config = {
            "models": {"specialist-decide": endpoint, "frontier": endpoint},
            "workflows": {name: f"{FLOWS}:{name}" for name in ("decide_and_file", "held", "approve_and_file")},
            "api_tokens": {
                "alice": {"token_env": "ALICE_TOKEN", "scopes": ["read", "approve"]},
                "intake": {"token_env": "INTAKE_TOKEN", "scopes": ["submit"]},
                "reader": {"token_env": "READER_TOKEN", "scopes": ["read"]},
            },
            **settings,
        }
        (tmp_path / "flotilla.yaml").write_text(yaml.safe_dump(config))
        monkeypatch.chdir(tmp_path)
        for name, value in {
            "FLOTILLA_DATA_DIR": str(tmp_path / "data"),
            "FLOTILLA_AUDIT_CONTENT": "full",
            "FLOTILLA_API_TOKEN": ALL_TOKEN,
            "FLOTILLA_AUDIT_TOKEN": AUDIT_TOKEN,
            "ALICE_TOKEN": ALICE_TOKEN,
            "INTAKE_TOKEN": INTAKE_TOKEN,
            "READER_TOKEN": READER_TOKEN,
        }.items():
            monkeypatch.setenv(name, value)
        app = create_app(load_settings())
        try:
            with serve_app(app, lifespan="on") as url:
                yield url, app.state.runtime
        finally:
            HELD_RELEASE.set()  # no run of `held` outlives its test


async def submit(http: httpx.AsyncClient, workflow: str, token: str = ALL_TOKEN, key: str | None = None) -> httpx.Response:
    headers = auth(token) | ({"Idempotency-Key": key} if key else {})
    return await http.post("/v1/runs", json={"workflow": workflow, "input": INVOICE}, headers=headers)


async def settled(http: httpx.AsyncClient, run_id: str, until: set[str] = ENDED) -> dict[str, Any]:
    deadline = time.monotonic() + TIMEOUT  # a hang guard, not a speed check
    while time.monotonic() < deadline:
        view = (await http.get(f"/v1/runs/{run_id}", headers=auth(ALL_TOKEN))).json()
        if view["status"] in until:
            return view
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} did not reach {until}: {view}")


async def sse(response: httpx.Response) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """(event, data) pairs of a text/event-stream response."""
    kind, data = "message", []
    async for line in response.aiter_lines():
        if line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line and data:
            yield kind, json.loads("\n".join(data))
            kind, data = "message", []


async def stream(http: httpx.AsyncClient, run_id: str) -> list[tuple[str, dict[str, Any]]]:
    async with http.stream("GET", f"/v1/runs/{run_id}/events", headers=auth(READER_TOKEN)) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        return [event async for event in sse(response)]


async def test_submit_poll_succeeds_and_events_replay(served) -> None:
    url, _ = served
    async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}  # open, no token
        accepted = await submit(http, "decide_and_file", token=INTAKE_TOKEN)
        assert accepted.status_code == 202
        body = accepted.json()
        assert body["status_url"] == f"/v1/runs/{body['run_id']}" == accepted.headers["location"]
        assert body["events_url"] == f"/v1/runs/{body['run_id']}/events"
        view = await settled(http, body["run_id"])
        assert view["status"] == "succeeded", view
        assert view["output"] == {"filed": True, "decision": "approve"}
        assert view["initiator"] == "api:intake" and [s["agent"] for s in view["steps"]] == ["decide", "file"]
        events = await stream(http, body["run_id"])  # a finished run: replayed from its record
    kinds = [kind for kind, _ in events]
    assert kinds == ["started", "step", "step", "finished"]
    assert [data.get("agent") for kind, data in events if kind == "step"] == ["decide", "file"]
    assert events[-1][1]["status"] == "succeeded" and all(data["run_id"] == body["run_id"] for _, data in events)


async def test_live_events_then_cancel(served) -> None:
    url, runtime = served
    async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as http:
        run_id = (await submit(http, "held")).json()["run_id"]
        async with http.stream("GET", f"/v1/runs/{run_id}/events", headers=auth(READER_TOKEN)) as response:
            seen: list[tuple[str, dict[str, Any]]] = []
            async for kind, data in sse(response):
                seen.append((kind, data))
                if kind == "step":  # `measure` ran; `hold` waits: cancel the run mid-stream
                    cancelled = await http.post(f"/v1/runs/{run_id}/cancel", headers=auth(INTAKE_TOKEN))
                    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        assert [k for k, _ in seen] == ["started", "step", "finished"]
        assert seen[1][1]["agent"] == "measure" and seen[-1][1]["status"] == "cancelled"
        again = await http.post(f"/v1/runs/{run_id}/cancel", headers=auth(INTAKE_TOKEN))
        assert again.status_code == 409 and "already ended (cancelled)" in again.json()["detail"]
    assert runtime.runs.get_run(run_id).status == "cancelled"


async def test_live_events_reach_finished(served) -> None:
    url, _ = served
    async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as http:
        run_id = (await submit(http, "held")).json()["run_id"]
        async with http.stream("GET", f"/v1/runs/{run_id}/events", headers=auth(READER_TOKEN)) as response:
            kinds = []
            async for kind, _ in sse(response):
                kinds.append(kind)
                if kind == "step" and kinds.count("step") == 1:
                    HELD_RELEASE.set()  # the run goes on while the stream is open
        assert kinds == ["started", "step", "step", "finished"]
        assert (await settled(http, run_id))["status"] == "succeeded"


async def test_same_idempotency_key_never_starts_two_runs(served) -> None:
    url, runtime = served
    async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as http:
        first, second = [await submit(http, "decide_and_file", key="order-17") for _ in range(2)]
        assert first.status_code == second.status_code == 202
        assert first.json()["run_id"] == second.json()["run_id"]
        raced = await asyncio.gather(*(submit(http, "decide_and_file", key="order-18") for _ in range(8)))
        assert {r.status_code for r in raced} == {202}
        run_ids = {r.json()["run_id"] for r in raced}
        assert len(run_ids) == 1
        assert (await settled(http, run_ids.pop()))["status"] == "succeeded"
        assert (await settled(http, first.json()["run_id"]))["status"] == "succeeded"
    with runtime.runs.engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(runs_table)).scalar()
    assert count == 2  # one run per key, however many submits


async def test_tokens_scopes_and_errors(served) -> None:
    url, _ = served
    async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as http:
        body = {"workflow": "decide_and_file", "input": INVOICE}
        missing = await http.post("/v1/runs", json=body)
        assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
        assert (await http.post("/v1/runs", json=body, headers=auth("not-a-token"))).status_code == 401
        assert (await http.post("/v1/runs", json=body, headers=auth(AUDIT_TOKEN))).status_code == 401  # the compliance token is not an API token
        refused = await http.post("/v1/runs", json=body, headers=auth(READER_TOKEN))
        assert refused.status_code == 403 and "'submit' scope" in refused.json()["detail"]
        assert (await http.get("/v1/runs/nope", headers=auth(INTAKE_TOKEN))).status_code == 403  # submit only: no reading
        unknown = await http.get("/v1/runs/no-such-run", headers=auth(READER_TOKEN))
        assert unknown.status_code == 404 and "no-such-run" in unknown.json()["detail"]
        assert (await http.get("/v1/runs/no-such-run/events", headers=auth(READER_TOKEN))).status_code == 404
        assert (await http.post("/v1/runs/no-such-run/approve", headers=auth(ALICE_TOKEN))).status_code == 404
        assert (await http.post("/v1/runs/no-such-run/approve", headers=auth(READER_TOKEN))).status_code == 403

        bad_workflow = await submit(http, "no_such_flow")
        assert bad_workflow.status_code == 400 and "known workflows" in bad_workflow.json()["detail"]
        bad_path = await submit(http, "/etc/passwd.yaml")  # names only: never a file of the caller's choosing
        assert bad_path.status_code == 400
        empty = await http.post("/v1/runs", json={"workflow": "decide_and_file", "input": "  "}, headers=auth(ALL_TOKEN))
        assert empty.status_code == 400 and "empty" in empty.json()["detail"]
        malformed = await http.post("/v1/runs", json={"workflow": "decide_and_file"}, headers=auth(ALL_TOKEN))
        assert malformed.status_code == 422

        run_id = (await submit(http, "decide_and_file")).json()["run_id"]
        assert (await settled(http, run_id))["status"] == "succeeded"
        not_waiting = await http.post(f"/v1/runs/{run_id}/approve", json={"reason": "fine"}, headers=auth(ALICE_TOKEN))
        assert not_waiting.status_code == 409 and "not waiting for approval" in not_waiting.json()["detail"]
        assert (await http.post(f"/v1/runs/{run_id}/cancel", headers=auth(ALL_TOKEN))).status_code == 409
        assert (await http.get(f"/v1/runs/{run_id}", headers=auth(READER_TOKEN))).json()["status"] == "succeeded"  # nothing changed


async def test_approve_and_reject_over_http(served) -> None:
    url, runtime = served
    async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as http:
        run_id = (await submit(http, "approve_and_file")).json()["run_id"]
        waiting = await settled(http, run_id)
        assert waiting["status"] == "waiting_approval", waiting
        events = await stream(http, run_id)
        assert events[-1][0] == "approval" and events[-1][1]["approval"]["step"] == "decide"
        assert (await http.post(f"/v1/runs/{run_id}/approve", headers=auth(INTAKE_TOKEN))).status_code == 403
        bad_edit = await http.post(f"/v1/runs/{run_id}/approve", json={"edit": {"colour": "red"}}, headers=auth(ALICE_TOKEN))
        assert bad_edit.status_code == 400 and "colour" in bad_edit.json()["detail"]
        assert (await http.get(f"/v1/runs/{run_id}", headers=auth(READER_TOKEN))).json()["status"] == "waiting_approval"  # nothing changed
        approved = await http.post(f"/v1/runs/{run_id}/approve", json={"reason": "checked the PO"}, headers=auth(ALICE_TOKEN))
        assert approved.status_code == 200, approved.text
        done = await settled(http, run_id, {"succeeded", "failed", "blocked"})
        assert done["status"] == "succeeded" and done["output"] == {"filed": True, "decision": "approve"}
        decision = next(s for s in done["steps"] if s.get("approval"))
        assert decision["approval"]["approver"] == "alice" and decision["approval"]["reason"] == "checked the PO"
        twice = await http.post(f"/v1/runs/{run_id}/approve", headers=auth(ALICE_TOKEN))
        assert twice.status_code == 409

        other = (await submit(http, "approve_and_file")).json()["run_id"]
        assert (await settled(http, other))["status"] == "waiting_approval"
        rejected = await http.post(f"/v1/runs/{other}/reject", json={"reason": "wrong vendor"}, headers=auth(ALICE_TOKEN))
        assert rejected.status_code == 200
        ended = await settled(http, other, {"blocked"})
        assert ended["error"]["code"] == "approval_rejected" and "alice" in ended["error"]["message"]
        assert (await http.post(f"/v1/runs/{other}/approve", json={"edit": {"x": 1}, "extra": 1}, headers=auth(ALICE_TOKEN))).status_code == 422

        third = (await submit(http, "approve_and_file")).json()["run_id"]
        assert (await settled(http, third))["status"] == "waiting_approval"
        cancelled = await http.post(f"/v1/runs/{third}/cancel", headers=auth(INTAKE_TOKEN))
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        assert (await http.post(f"/v1/runs/{third}/approve", headers=auth(ALICE_TOKEN))).status_code == 409


async def test_openapi_documents_the_run_api(served) -> None:
    url, _ = served
    async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as http:
        schema = (await http.get("/openapi.json")).json()
    paths = schema["paths"]
    assert set(paths["/v1/runs"]) == {"post"}
    for path, method in [("/v1/runs/{run_id}", "get"), ("/v1/runs/{run_id}/events", "get"), ("/v1/runs/{run_id}/approve", "post"),
                         ("/v1/runs/{run_id}/reject", "post"), ("/v1/runs/{run_id}/cancel", "post")]:
        assert method in paths[path], path
    post = paths["/v1/runs"]["post"]
    assert "202" in post["responses"] and {"401", "403", "400", "503"} <= set(post["responses"])
    assert any(p["name"] == "Idempotency-Key" and p["in"] == "header" for p in post["parameters"])
    assert "text/event-stream" in paths["/v1/runs/{run_id}/events"]["get"]["responses"]["200"]["content"]
    assert schema["components"]["securitySchemes"]["apiToken"]["scheme"].lower() == "bearer"


def test_token_config_errors_say_what_to_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FLOTILLA_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("BOB_TOKEN", raising=False)
    (tmp_path / "flotilla.yaml").write_text(yaml.safe_dump({"api_tokens": {"bob": {"token_env": "BOB_TOKEN", "scopes": ["approve"]}}}))
    with pytest.raises(ConfigError, match=r"api_tokens.bob: \$BOB_TOKEN is not set"):
        create_app(load_settings())
    (tmp_path / "flotilla.yaml").write_text(yaml.safe_dump({"api_tokens": {"bob": {"token_env": "BOB_TOKEN", "scopes": ["delete"]}}}))
    with pytest.raises(ConfigError, match="api_tokens.bob.scopes"):
        load_settings()
    (tmp_path / "flotilla.yaml").write_text(yaml.safe_dump({"api_tokens": {"bob": {"token_env": "BOB_TOKEN", "scopes": ["read"]}}}))
    monkeypatch.setenv("BOB_TOKEN", "bob-secret-0006")
    monkeypatch.setenv("FLOTILLA_API_TOKEN", "single-user-secret-0007")
    secrets = configured_secrets(load_settings())
    assert {"bob-secret-0006", "single-user-secret-0007"} <= set(secrets)  # exporters never record them


async def test_audit_page_buttons_only_for_an_approver(served) -> None:
    url, _ = served
    async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as http:
        run_id = (await submit(http, "approve_and_file")).json()["run_id"]
        assert (await settled(http, run_id))["status"] == "waiting_approval"
        page = f"/audit/runs/{run_id}"
        compliance = await http.get(page, headers=auth(AUDIT_TOKEN))
        assert compliance.status_code == 200 and 'data-testid="decision"' not in compliance.text  # read-only: no buttons
        refused = await http.post(f"{page}/decision", data={"action": "approve"}, headers=auth(AUDIT_TOKEN))
        assert refused.status_code == 403 and "read-only" in refused.json()["detail"]
        assert (await http.get(page, headers=auth(READER_TOKEN))).status_code == 303  # an API token without approve: sign-in page
        assert (await http.get("/audit/", headers=auth(ALICE_TOKEN))).status_code == 303  # approvers see run pages, not the trail
        approver = await http.get(page, headers=auth(ALICE_TOKEN))
        assert approver.status_code == 200 and 'data-testid="approve"' in approver.text and "Deciding as alice" in approver.text
        assert (await http.get(f"/v1/runs/{run_id}", headers=auth(READER_TOKEN))).json()["status"] == "waiting_approval"  # nothing changed
        decided = await http.post(f"{page}/decision", data={"action": "approve", "reason": "PO matches"}, headers=auth(ALICE_TOKEN))
        assert decided.status_code == 303 and decided.headers["location"].endswith(page)
        done = await settled(http, run_id, {"succeeded", "failed", "blocked"})
        assert done["status"] == "succeeded"
        assert next(s for s in done["steps"] if s.get("approval"))["approval"]["approver"] == "alice"
        again = await http.post(f"{page}/decision", data={"action": "reject"}, headers=auth(ALICE_TOKEN))
        assert again.status_code == 409
        after = await http.get(page, headers=auth(ALICE_TOKEN))
        assert 'data-testid="decision"' not in after.text  # decided: the buttons are gone


def test_approver_decides_in_the_browser(served) -> None:
    """Debian's Chromium through Playwright (tests/audit/test_browser.py): the compliance officer
    signed in sees the waiting run without buttons; the approver signs in with their own token
    and approves it there."""
    from playwright.sync_api import expect, sync_playwright

    from tests.audit.test_browser import CHROMIUM, CHROMIUM_ARGS

    url, _ = served
    with httpx.Client(base_url=url, timeout=TIMEOUT) as http:
        run_id = http.post("/v1/runs", json={"workflow": "approve_and_file", "input": INVOICE}, headers=auth(ALL_TOKEN)).json()["run_id"]
        deadline = time.monotonic() + TIMEOUT
        while http.get(f"/v1/runs/{run_id}", headers=auth(READER_TOKEN)).json()["status"] != "waiting_approval":
            assert time.monotonic() < deadline, "the run never waited for approval"
            time.sleep(0.05)
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: run `make setup-test` (apt package chromium)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        for token, approves in ((AUDIT_TOKEN, False), (ALICE_TOKEN, True)):
            context = browser.new_context()
            page = context.new_page()
            page.goto(f"{url}/audit/runs/{run_id}")
            page.get_by_test_id("token").fill(token)
            page.get_by_role("button", name="Open").click()
            expect(page.get_by_test_id("run-id")).to_have_text(run_id)
            if not approves:
                expect(page.get_by_test_id("decision")).to_have_count(0)
            else:
                expect(page.get_by_test_id("decision-shows")).to_contain_text('"decision": "approve"')
                page.get_by_test_id("decision-reason").fill("PO matches the ledger")
                page.get_by_test_id("approve").click()
                expect(page.get_by_test_id("run-id")).to_have_text(run_id)
                expect(page.get_by_test_id("decision")).to_have_count(0)
            context.close()
        browser.close()
    with httpx.Client(base_url=url, timeout=TIMEOUT) as http:
        deadline = time.monotonic() + TIMEOUT
        while (view := http.get(f"/v1/runs/{run_id}", headers=auth(READER_TOKEN)).json())["status"] not in ENDED - {"waiting_approval"}:
            assert time.monotonic() < deadline, view
            time.sleep(0.05)
    assert view["status"] == "succeeded"
    decision = next(s for s in view["steps"] if s.get("approval"))["approval"]
    assert (decision["action"], decision["approver"], decision["reason"]) == ("approve", "alice", "PO matches the ledger")


async def test_runs_beyond_the_limit_wait_and_can_be_cancelled_waiting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with serving(tmp_path, monkeypatch, max_concurrent_runs=1) as (url, runtime):
        async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as http:
            going = (await submit(http, "held")).json()["run_id"]
            await settled(http, going, {"running"})
            queued = (await submit(http, "held")).json()["run_id"]
            assert (await http.get(f"/v1/runs/{queued}", headers=auth(READER_TOKEN))).json()["status"] == "pending"
            cancelled = await http.post(f"/v1/runs/{queued}/cancel", headers=auth(INTAKE_TOKEN))
            assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
            assert cancelled.json()["error"]["message"] == "the run was cancelled before it started"
            assert [kind for kind, _ in await stream(http, queued)][-1] == "finished"
            HELD_RELEASE.set()
            assert (await settled(http, going))["status"] == "succeeded"
        assert runtime.runs.get_run(queued).status == "cancelled"
