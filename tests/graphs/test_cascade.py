"""Model tiers: an answer that fails validation or verification goes to the next tier with the
failure shown to it; a confidential run skips every non-local tier (a scripted remote server
records zero requests); when every tier fails the run ends `needs_review` — through the runner,
the run store, the CLI's exit code, the MCP gateway and the audit page — and a step deadline
bounds them all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from flotilla.audit.exporter import AuditSpanExporter
from flotilla.audit.runs import RunStore
from flotilla.audit.sanitize import Sanitizer
from flotilla.audit.store import AuditStore
from flotilla.audit.web import create_audit_app
from flotilla.graphs import load_workflow
from flotilla.mcp_servers.gateway import Gateway, GatewayHttp
from tests.audit.factory import sync_telemetry
from tests.mcp.helpers import ServedApp
from tests.support.scripted_openai import Reply, ScriptedOpenAI
from tests.support.servers import serve_app

from .tiers import DEGENERATE, GOOD, TierHarness, model, write_workflow

TIERS = ["specialist", "large", "frontier"]


async def test_each_failing_tier_hands_on_with_its_failure_shown_until_one_passes(tmp_path: Path) -> None:
    small, large, frontier = model(DEGENERATE, "small"), model("not json", "large"), model(GOOD, "frontier-model")
    h = TierHarness(tmp_path, {"specialist": small, "large": large, "frontier": frontier})
    try:
        result = await h.run(write_workflow(tmp_path, model=TIERS))
    finally:
        await h.aclose()
    assert result.status == "succeeded" and result.output == GOOD
    [step] = result.steps
    assert step["tier"] == "frontier" and step["model"] == "frontier-model"
    assert [(a["model"], a["ok"]) for a in step["attempts"]] == [("specialist", False), ("large", False), ("frontier", True)]
    assert step["attempts"][0]["reasons"] == ["degenerate_text: reasons.0 repeats a 7-character fragment 11 times (77 of 80 characters)"]
    assert step["attempts"][1]["reasons"][0].startswith("agent_output_invalid: agent 'decide': the model's output does not match Decision after one repair")
    assert [len(m.requests) for m in (small, large, frontier)] == [1, 2, 1]  # the large tier got its repair
    shown = large.requests[0].messages[-1]["content"]
    assert "rejected" in shown and "degenerate_text" in shown
    assert "agent_output_invalid" in frontier.requests[0].messages[-1]["content"]
    chats = [s for s in h.spans() if s["name"].startswith("chat ")]
    assert [c["attributes"].get("flotilla.escalated", False) for c in chats] == [False, True, True, True]


async def test_the_first_tier_that_passes_ends_the_cascade(tmp_path: Path) -> None:
    small, frontier = model(GOOD, "small"), model(GOOD, "frontier-model")
    h = TierHarness(tmp_path, {"specialist": small, "frontier": frontier})
    try:
        result = await h.run(write_workflow(tmp_path, model=["specialist", "frontier"]))
    finally:
        await h.aclose()
    assert result.status == "succeeded" and result.steps[0]["tier"] == "specialist"
    assert len(frontier.requests) == 0 and len(result.steps[0]["attempts"]) == 1


async def test_every_tier_failing_is_needs_review_with_each_attempt_kept(tmp_path: Path) -> None:
    h = TierHarness(tmp_path, {alias: model(DEGENERATE, alias) for alias in TIERS})
    try:
        result = await h.run(write_workflow(tmp_path, model=TIERS))
        record = h.runs.get_run(result.run_id)
        [run_span] = [s for s in h.spans() if s["name"] == "invoke_workflow tiered"]
    finally:
        await h.aclose()
    assert result.status == "needs_review" and result.output is None
    assert result.error["code"] == "needs_review" and result.error["step"] == "decide"
    assert [r["reason"].split(":")[0] for r in result.error["reasons"]] == TIERS
    assert all("degenerate_text" in r["reason"] for r in result.error["reasons"])
    [step] = result.steps
    assert step["ok"] is False and [a["model"] for a in step["attempts"]] == TIERS
    assert record.status == "needs_review" and record.steps[0]["attempts"] == step["attempts"]
    assert run_span["attributes"]["flotilla.status"] == "needs_review" and run_span["status"]["status_code"] == "UNSET"


async def test_a_confidential_run_never_escalates_to_a_remote_tier(tmp_path: Path) -> None:
    remote = ScriptedOpenAI(default=lambda body: Reply(json.dumps(GOOD)))
    with serve_app(remote.app()) as url:
        h = TierHarness(tmp_path, {"specialist": model(DEGENERATE, "small"), "frontier": f"{url}/v1"}, remote=("frontier",))
        try:
            workflow = write_workflow(tmp_path, model=["specialist", "frontier"])
            confidential = await h.run(workflow, confidential=True)
            assert remote.requests == []  # not one request left the organisation
            public = await h.run(workflow)
        finally:
            await h.aclose()
    assert confidential.status == "needs_review"
    attempts = confidential.steps[0]["attempts"]
    assert attempts[1] == {
        "model": "frontier", "ok": False, "skipped": True,
        "reasons": ["skipped: 'frontier' is not local and this run is confidential (run flag)"],
    }
    # Without the flag, the same failure escalates to the remote frontier, which answers.
    assert public.status == "succeeded" and public.steps[0]["tier"] == "frontier" and len(remote.requests) == 1


async def test_every_tier_timing_out_is_needs_review_at_the_step_deadline(tmp_path: Path) -> None:
    slow = ScriptedOpenAI(default=lambda body: Reply(json.dumps(GOOD), delay_s=60))
    with serve_app(slow.app()) as url:
        h = TierHarness(tmp_path, {"specialist": f"{url}/v1", "frontier": f"{url}/v1"})
        try:
            result = await h.run(write_workflow(tmp_path, model=["specialist", "frontier"], timeout_s=0.5))
        finally:
            await h.aclose()
    assert result.status == "needs_review" and result.error["step"] == "decide"
    # Whichever came first — the client's per-call timeout (the time left in the step) or the
    # step's own deadline — every attempt made ended on the clock, and the step stopped there.
    reasons = [r for a in result.steps[0]["attempts"] for r in a["reasons"]]
    assert reasons and all("deadline of 0.5s passed" in r or "did not answer within" in r for r in reasons), reasons


async def test_a_lone_tier_timing_out_is_needs_review_too(tmp_path: Path) -> None:
    slow = ScriptedOpenAI(default=lambda body: Reply(json.dumps(GOOD), delay_s=60))
    with serve_app(slow.app()) as url:
        h = TierHarness(tmp_path, {"specialist": f"{url}/v1"})
        try:
            result = await h.run(write_workflow(tmp_path, model="specialist", timeout_s=0.5))
        finally:
            await h.aclose()
    assert result.status == "needs_review" and result.error["code"] == "needs_review"
    [attempt] = result.steps[0]["attempts"]
    assert attempt["model"] == "specialist" and not attempt["ok"]


def _config(tmp: Path, url: str) -> dict[str, str]:
    lines = ["models:"]
    for alias in ("specialist", "frontier"):
        lines += [f"  {alias}:", "    provider: openai-compatible", f"    base_url: {url}/v1", f"    model: {alias}", "    max_retries: 0"]
    (tmp / "flotilla.yaml").write_text("\n".join(lines) + "\n")
    return {**os.environ, "FLOTILLA_CONFIG": str(tmp / "flotilla.yaml"), "FLOTILLA_DATA_DIR": str(tmp / "data"), "FLOTILLA_CACHE_DIR": str(tmp / "cache")}


def test_the_cli_exits_4_and_says_which_check_failed(tmp_path: Path) -> None:
    server = ScriptedOpenAI(default=lambda body: Reply(json.dumps(DEGENERATE)))
    workflow = write_workflow(tmp_path, model=["specialist", "frontier"])
    with serve_app(server.app()) as url:
        env = _config(tmp_path, url)

        def flotilla(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "flotilla.runtime", *args], input=b"Invoice INV-1, total 12.50", capture_output=True, env=env, cwd=tmp_path, timeout=120)

        as_json, printed = flotilla("run", str(workflow), "--input", "-", "--json"), flotilla("run", str(workflow), "--input", "-")
    assert as_json.returncode == 4, as_json.stderr.decode()
    result = json.loads(as_json.stdout)
    assert result["status"] == "needs_review" and result["error"]["step"] == "decide"
    assert [a["model"] for a in result["steps"][0]["attempts"]] == ["specialist", "frontier"]
    assert printed.returncode == 4
    out = printed.stdout.decode() + printed.stderr.decode()
    assert "needs review" in out and "degenerate_text" in out and "Traceback" not in out
    assert "fie_de" not in out  # the reason describes the text; it does not repeat it


async def test_the_gateway_returns_needs_review_with_the_failed_check(tmp_path: Path) -> None:
    h = TierHarness(tmp_path, {"specialist": model(DEGENERATE, "small"), "frontier": model(DEGENERATE, "frontier-model")})
    spec = load_workflow(str(write_workflow(tmp_path, model=["specialist", "frontier"])))
    http = GatewayHttp(Gateway(lambda: h.runner, workflows=[spec]), token=None)
    try:
        with ServedApp(http.app("/mcp")) as served:
            async with Client(streamable_http_client(f"{served.url}/mcp"), mode="legacy") as client:
                result = await client.session.call_tool("tiered", {"input": "Invoice INV-1, total 12.50"})
    finally:
        h.telemetry.shutdown()
    assert not result.is_error, result.content
    structured = result.structured_content
    assert structured["status"] == "needs_review"
    assert [r["step"] for r in structured["review"]] == ["decide", "decide"]
    assert "degenerate_text" in structured["review"][1]["reason"]
    assert result.content[0].text.startswith(f"NEEDS REVIEW: run {structured['run_id']}")


async def test_the_audit_page_shows_the_run_as_needs_review(tmp_path: Path) -> None:
    sqlite_store = AuditStore(f"sqlite:///{tmp_path / 'audit.sqlite'}", hmac_key=b"test-audit-key-not-a-real-secret")
    telemetry = sync_telemetry([AuditSpanExporter(sqlite_store, Sanitizer("redacted", redact=lambda text: text))])
    runs = RunStore(f"sqlite:///{tmp_path / 'runs.sqlite'}", audit=sqlite_store)
    h = TierHarness(tmp_path, {"specialist": model(DEGENERATE, "small")}, telemetry=telemetry, runs=runs)
    try:
        result = await h.run(write_workflow(tmp_path, model="specialist"))
    finally:
        await h.aclose()
    app = FastAPI()
    app.mount("/audit", create_audit_app(sqlite_store, "token"))
    client = TestClient(app, headers={"Authorization": "Bearer token"})
    listed = client.get("/audit/?status=needs_review").text
    assert result.run_id in listed and 'data-status="needs_review"' in listed
    page = client.get(f"/audit/runs/{result.run_id}").text
    sqlite_store.close()
    assert 'data-status="needs_review"' in page and "degenerate_text" in page
