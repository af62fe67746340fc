"""Human approval (graphs/approval.py): a run pauses with LangGraph interrupt(), waits in the run
store and the checkpoint only, and a person approves (maybe with edits) or rejects it — through
the runner, the CLI and the MCP gateway — each decision an audit record in the hash chain."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from mcp import Client

from flotilla.audit.errors import InvalidInput
from flotilla.audit.store import AuditStore
from flotilla.graphs import load_workflow
from flotilla.graphs.approval import expire_due
from flotilla.graphs.backends.base import ApprovalForbidden, Decision, RunNotWaiting
from flotilla.graphs.build import check_spec
from flotilla.graphs.runner import RunNotFound, RunNotResumable
from flotilla.graphs.spec import SpecError, parse_spec
from flotilla.mcp_servers.gateway import Gateway
from tests.support.approval_steps import approval_workflow
from tests.support.scripted_openai import ScriptedOpenAI, by_schema
from tests.support.servers import serve_app

from .conftest import ALIASES, TRIAGE_ANSWERS, Harness, canned

REPO = Path(__file__).resolve().parents[2]
SAMPLE = (REPO / "graphs" / "samples" / "invoice.txt").read_text()
OVER_1000 = "    approval:\n      when: decide.decision == 'approve' and extract.total > 1000\n      timeout: 3d\n"


def flow(tmp: Path, approval: str = OVER_1000, settings: str = ""):
    text = approval_workflow(approval, settings)
    (tmp / "wf.yaml").write_text(text)
    return parse_spec(text, tmp / "wf.yaml")


def audited(h: Harness) -> AuditStore:
    h.runs.audit = AuditStore(f"sqlite:///{h.dir / 'audit.sqlite'}")
    return h.runs.audit


async def paused(h: Harness, spec) -> str:
    events: list[str] = []
    result = await h.runner.run(spec, SAMPLE, on_event=lambda e: events.append(e.kind))
    assert result.status == "waiting_approval", result.error
    assert events[-1] == "approval" and "finished" not in events  # the stream ends at the request
    return result.run_id


async def test_a_run_pauses_holds_nothing_in_memory_and_goes_on_when_approved(harness, tmp_path: Path) -> None:
    h = harness()
    audit = audited(h)
    spec = flow(tmp_path)
    run_id = await paused(h, spec)
    record = h.runs.get_run(run_id)
    assert record.status == "waiting_approval"
    approval = record.approval
    assert approval["step"] == "decide" and approval["gate"] == "step"
    assert approval["shows"]["decision"] == "approve" and "extract.total > 1000" in approval["why"]
    deadline = datetime.fromisoformat(approval["deadline"]) - datetime.fromisoformat(approval["requested_at"])
    assert deadline == timedelta(days=3)
    assert [s["agent"] for s in record.steps] == ["extract", "decide"]
    await h.runner.aclose()

    # Another process (a fresh runner over the same stores) decides: the checkpoint had it all.
    later = Harness(h.dir, canned())
    later.runs.audit = audit
    try:
        result = await later.runner.decide(spec, run_id, Decision("approve", "alice", "checked the PO by phone"))
    finally:
        await later.runner.aclose()
    assert result.status == "succeeded", result.error
    assert [s["agent"] for s in result.steps] == ["extract", "decide", "decide.approval", "write"]
    gate = result.steps[2]
    assert gate["approval"]["approver"] == "alice" and gate["approval"]["action"] == "approve"
    assert gate["produced_by"] == "approval by alice"
    assert result.output["subject"] == "Invoice INV-2026-0412: approve"
    stored = later.runs.get_run(run_id)
    assert stored.status == "succeeded" and stored.approval["decision"]["approver"] == "alice"

    report = audit.verify()
    assert report.ok, report
    decisions = [r.payload for r in audit.run_records(run_id) if r.kind == "approval"]
    assert len(decisions) == 1
    decided = decisions[0]
    assert decided["approver"] == "alice" and decided["action"] == "approve" and decided["reason"] == "checked the PO by phone"
    assert decided["step"] == "decide" and decided["shows"]["decision"] == "approve" and len(decided["shows_sha256"]) == 64
    events = [r.payload.get("event") for r in audit.run_records(run_id) if r.kind == "run"]
    assert events == ["started", "waiting_approval", "finished"]


async def test_a_condition_that_does_not_hold_asks_no_one(harness, tmp_path: Path) -> None:
    small = {**TRIAGE_ANSWERS, "Invoice": {**TRIAGE_ANSWERS["Invoice"], "total": 734.8}}
    result = await harness(canned(small)).runner.run(flow(tmp_path), SAMPLE)
    assert result.status == "succeeded" and result.approval is None
    assert [s["agent"] for s in result.steps] == ["extract", "decide", "write"]


async def test_approving_with_an_edit_replaces_the_fields_the_rest_of_the_run_reads(harness, tmp_path: Path) -> None:
    h = harness()
    audit = audited(h)
    spec = flow(tmp_path)
    run_id = await paused(h, spec)
    for bad in ({"verdict": "hold"}, {"decision": "maybe"}):  # not a field; not a value the schema allows
        with pytest.raises(InvalidInput):
            await h.runner.decide(spec, run_id, Decision("approve", "alice", edit=bad))
    assert h.runs.get_run(run_id).status == "waiting_approval"  # nothing changed

    result = await h.runner.decide(spec, run_id, Decision("approve", "alice", "PO not signed yet", edit={"decision": "hold"}))
    assert result.status == "succeeded"
    assert result.output["subject"] == "Invoice INV-2026-0412: hold"
    assert result.steps[2]["output"]["decision"] == "hold" and result.steps[2]["notes"] == ["approved by alice: PO not signed yet", "changed decision"]
    decided = next(r.payload for r in audit.run_records(run_id) if r.kind == "approval")
    assert decided["edit"] == {"decision": "hold"} and decided["shows"]["decision"] == "approve"  # what they saw, what they changed


async def test_a_rejected_run_ends_blocked_naming_the_approver_and_reason(harness, tmp_path: Path) -> None:
    h = harness()
    audit = audited(h)
    spec = flow(tmp_path)
    run_id = await paused(h, spec)
    events: list[str] = []
    result = await h.runner.decide(spec, run_id, Decision("reject", "bob", "vendor under review"), on_event=lambda e: events.append(e.kind))
    assert result.status == "blocked" and events == ["finished"]
    assert result.error["code"] == "approval_rejected"
    assert "bob" in result.error["message"] and "vendor under review" in result.error["message"]
    assert result.steps[-1]["agent"] == "decide.approval" and result.steps[-1]["ok"] is False
    stored = h.runs.get_run(run_id)
    assert stored.status == "blocked" and stored.error["code"] == "approval_rejected"
    with pytest.raises(RunNotWaiting, match="blocked"):
        await h.runner.decide(spec, run_id, Decision("approve", "alice"))
    _, graph = await h.runner._graph(spec, spec.version())
    assert not (await graph.aget_state({"configurable": {"thread_id": run_id}})).values  # blocked: its checkpoint is gone
    assert audit.verify().ok


async def test_deciding_twice_or_a_run_not_waiting_changes_nothing(harness, tmp_path: Path) -> None:
    h = harness()
    spec = flow(tmp_path)
    run_id = await paused(h, spec)
    # Two deciders at once: exactly one decision is taken.
    outcomes = await asyncio.gather(
        h.runner.decide(spec, run_id, Decision("approve", "alice")),
        h.runner.decide(spec, run_id, Decision("reject", "bob", "no")),
        return_exceptions=True,
    )
    assert sorted(type(o).__name__ for o in outcomes) == ["RunNotWaiting", "RunResult"]
    after = h.runs.get_run(run_id)
    with pytest.raises(RunNotWaiting, match="not waiting for approval"):
        await h.runner.decide(spec, run_id, Decision("reject", "carol", "too late"))
    assert h.runs.get_run(run_id) == after

    small = {**TRIAGE_ANSWERS, "Invoice": {**TRIAGE_ANSWERS["Invoice"], "total": 10.0}}
    other = harness(canned(small))
    done = await other.runner.run(spec, SAMPLE)
    assert done.status == "succeeded"
    with pytest.raises(RunNotWaiting, match="is succeeded, not waiting"):
        await other.runner.decide(spec, done.run_id, Decision("approve", "alice"))
    with pytest.raises(RunNotFound):
        await h.runner.decide(spec, "no-such-run", Decision("approve", "alice"))
    with pytest.raises(InvalidInput):
        await h.runner.decide(spec, run_id, Decision("approve", " "))


async def test_only_the_named_approvers_may_decide_and_resume_refuses_a_waiting_run(harness, tmp_path: Path) -> None:
    h = harness()
    spec = flow(tmp_path, "    approval:\n      approvers: [alice]\n")
    run_id = await paused(h, spec)
    with pytest.raises(ApprovalForbidden, match="alice"):
        await h.runner.decide(spec, run_id, Decision("approve", "mallory"))
    with pytest.raises(RunNotResumable, match="runs approve"):
        await h.runner.resume(spec, run_id)
    assert h.runs.get_run(run_id).status == "waiting_approval"
    assert (await h.runner.decide(spec, run_id, Decision("approve", "alice"))).status == "succeeded"


async def test_a_decision_claimed_by_a_process_that_died_is_applied_on_resume(harness, tmp_path: Path) -> None:
    h = harness()
    spec = flow(tmp_path)
    run_id = await paused(h, spec)
    # What decide() does before resuming the graph: claim the decision. Then the process dies.
    request = h.runs.get_run(run_id).approval
    decision = {"action": "approve", "approver": "alice", "reason": "ok", "edit": {"decision": "hold"}, "decided_at": datetime.now(UTC).isoformat()}
    assert h.runs.claim_approval(run_id, {**request, "decision": decision}, owner="host:1:dead")
    assert h.runs.get_run(run_id).status == "running"
    result = await h.runner.resume(spec, run_id)  # what crash recovery calls
    assert result.status == "succeeded" and result.output["subject"] == "Invoice INV-2026-0412: hold"
    assert [s["agent"] for s in result.steps] == ["extract", "decide", "decide.approval", "write"]


async def test_an_unanswered_approval_is_rejected_at_its_deadline(harness, tmp_path: Path) -> None:
    h = harness()
    audit = audited(h)
    spec = flow(tmp_path)
    run_id = await paused(h, spec)
    assert await expire_due(h.runner) == []  # not yet
    later = datetime.now(UTC) + timedelta(days=3, seconds=1)
    assert await expire_due(h.runner, now=later) == [(run_id, "rejected")]
    stored = h.runs.get_run(run_id)
    assert stored.status == "blocked" and stored.error["code"] == "approval_rejected"
    assert stored.approval["decision"]["approver"] == "timeout"
    with pytest.raises(RunNotWaiting, match="rejected by timeout"):
        await h.runner.decide(spec, run_id, Decision("approve", "alice"))
    assert [r.payload["approver"] for r in audit.run_records(run_id) if r.kind == "approval"] == ["timeout"]


async def test_an_escalating_approval_waits_on_for_the_escalation_approvers(harness, tmp_path: Path) -> None:
    h = harness()
    audit = audited(h)
    spec = flow(tmp_path, "    approval:\n      timeout: 2h\n      on_timeout: escalate\n      escalate_to: [carol]\n")
    run_id = await paused(h, spec)
    later = datetime.now(UTC) + timedelta(hours=2, seconds=1)
    assert await expire_due(h.runner, now=later) == [(run_id, "escalated")]
    approval = h.runs.get_run(run_id).approval
    assert approval["escalated"] and approval["deadline"] is None and approval["approvers"] == ["carol"]
    with pytest.raises(ApprovalForbidden, match="carol"):
        await h.runner.decide(spec, run_id, Decision("approve", "alice"))
    assert (await h.runner.decide(spec, run_id, Decision("approve", "carol", "covering for alice"))).status == "succeeded"
    kinds = [(r.payload["event"], r.payload.get("approver")) for r in audit.run_records(run_id) if r.kind == "approval"]
    assert kinds == [("escalated", None), ("decided", "carol")]
    assert audit.verify().ok


async def test_a_run_that_needs_review_waits_for_a_person_under_approval_on_review(harness, tmp_path: Path) -> None:
    text = "name: review_flow\nkind: python\nfactory: tests.support.approval_steps:review_flow\nsettings:\n  approval_on_review: true\n"
    (tmp_path / "review.yaml").write_text(text)
    spec = parse_spec(text, tmp_path / "review.yaml")
    h = harness()
    result = await h.runner.run(spec, SAMPLE)
    assert result.status == "waiting_approval"
    assert result.approval["gate"] == "review" and result.approval["step"] == "check"
    assert "the total is unclear" in result.approval["why"] and result.approval["shows"]["total"] == 1200.0
    approved = await h.runner.decide(spec, result.run_id, Decision("approve", "dana", "read it off the scan", edit={"total": 1260.0}))
    assert approved.status == "succeeded" and approved.output == {"total": 1260.0, "note": "the total is smudged"}
    assert h.runs.get_run(result.run_id).output == {"total": 1260.0, "note": "the total is smudged"}

    again = await h.runner.run(spec, SAMPLE)
    rejected = await h.runner.decide(spec, again.run_id, Decision("reject", "dana", "unreadable"))
    assert rejected.status == "blocked" and rejected.output is None

    plain = parse_spec(text.replace("  approval_on_review: true\n", "  sensitivity: internal\n"), tmp_path / "review.yaml")
    assert (await h.runner.run(plain, SAMPLE)).status == "needs_review"


def test_validate_names_the_field_of_an_approval_that_cannot_work(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as bad:
        flow(tmp_path, "    approval:\n      when: decide.decision ==\n      timeout: 3 days\n")
    messages = [p.message for p in bad.value.problems]
    assert any(m.startswith("agents.decide.approval.when:") and "does not parse" in m for m in messages)
    assert any(m.startswith("agents.decide.approval.timeout:") and "90s, 30m, 12h, 3d" in m for m in messages)
    assert all(p.line is not None for p in bad.value.problems)

    spec = flow(tmp_path, "    approval:\n      when: decide.verdict == 'approve' and ledger.total > 5\n      on_timeout: escalate\n")
    messages = [p.message for p in check_spec(spec, ALIASES)]
    assert any("decide.verdict, which is not a field of decide's output schema" in m for m in messages)
    assert any("names 'ledger', which is not a step" in m for m in messages)
    assert any("`on_timeout: escalate` needs a `timeout:`" in m for m in messages)
    assert check_spec(flow(tmp_path), ALIASES) == []
    assert check_spec(load_workflow(REPO / "graphs" / "samples" / "invoice_approval.yaml"), ALIASES) == []
    # The built-in workflow never pauses: `make demo` and the tests rely on it finishing.
    builtin = load_workflow("document_triage")
    assert builtin.settings.approval_on_review is None and all(a.approval is None for a in builtin.agents.values())


async def test_the_gateway_says_a_run_waits_and_decides_it_with_its_tools(harness, tmp_path: Path) -> None:
    h = harness()
    audit = audited(h)
    spec = flow(tmp_path)
    gateway = Gateway(lambda: h.runner, workflows=[spec])
    async with Client(gateway.server, mode="legacy") as client:
        names = [t.name for t in (await client.list_tools()).tools]
        assert names == ["approval_flow", "approve_run", "reject_run"]
        first = await client.session.call_tool("approval_flow", {"input": SAMPLE})
        assert not first.is_error
        assert first.structured_content["status"] == "waiting_approval"
        run_id = first.structured_content["run_id"]
        assert first.content[0].text.startswith(f"WAITING FOR APPROVAL: run {run_id} paused at decide")
        assert first.structured_content["approval"]["shows"]["decision"] == "approve"

        approved = await client.session.call_tool("approve_run", {"run_id": run_id, "approver": "erin", "reason": "ok", "edit": {"decision": "hold"}})
        assert not approved.is_error, approved.content
        assert approved.structured_content["status"] == "succeeded"
        assert approved.structured_content["output"]["subject"] == "Invoice INV-2026-0412: hold"
        twice = await client.session.call_tool("reject_run", {"run_id": run_id, "approver": "erin", "reason": "changed my mind"})
        assert twice.is_error and "not waiting for approval" in twice.content[0].text and "run_not_waiting" in twice.content[0].text

        second = await client.session.call_tool("approval_flow", {"input": SAMPLE})
        rejected = await client.session.call_tool("reject_run", {"run_id": second.structured_content["run_id"], "approver": "erin", "reason": "duplicate"})
        assert not rejected.is_error and rejected.structured_content["status"] == "blocked"
        assert "rejected" in rejected.content[0].text and "duplicate" in rejected.content[0].text
        unknown = await client.session.call_tool("approve_run", {"run_id": "nope", "approver": "erin"})
        assert unknown.is_error and "run_not_found" in unknown.content[0].text
    await gateway.aclose()
    assert [r.payload["approver"] for r in audit.run_records(run_id) if r.kind == "approval"] == ["erin"]


# -- the CLI, as a user calls it (subprocesses; the scripted OpenAI-compatible model) -----------


def flotilla(tmp: Path, url: str, *args: str) -> subprocess.CompletedProcess:
    config = tmp / "flotilla.yaml"
    lines = ["models:"]
    for alias in ALIASES:
        lines += [f"  {alias}:", "    provider: openai-compatible", f"    base_url: {url}/v1", f"    model: {alias}", "    max_retries: 0"]
    config.write_text("\n".join(lines) + "\n")
    env = {**os.environ, "FLOTILLA_DATA_DIR": str(tmp / "data"), "FLOTILLA_CACHE_DIR": str(tmp / "cache"), "FLOTILLA_CONFIG": str(config)}
    return subprocess.run([sys.executable, "-m", "flotilla.runtime", *args], capture_output=True, env=env, cwd=tmp, timeout=180)


def test_cli_run_waits_then_runs_approve_and_reject_decide(tmp_path: Path) -> None:
    workflow = str(REPO / "graphs" / "samples" / "invoice_approval.yaml")
    sample = str(REPO / "graphs" / "samples" / "invoice.txt")
    server = ScriptedOpenAI(default=by_schema(TRIAGE_ANSWERS))
    with serve_app(server.app()) as url:
        run = flotilla(tmp_path, url, "run", workflow, "--input", sample, "--json")
        assert run.returncode == 5, run.stderr.decode()  # EXIT_WAITING
        waiting = json.loads(run.stdout)
        run_id = waiting["run_id"]
        assert waiting["status"] == "waiting_approval" and waiting["approval"]["step"] == "decide"

        listed = flotilla(tmp_path, url, "runs", "list", "--waiting", "--json")
        assert listed.returncode == 0, listed.stderr.decode()
        assert [r["run_id"] for r in json.loads(listed.stdout)["runs"]] == [run_id]
        shown = flotilla(tmp_path, url, "runs", "show", run_id)
        assert shown.returncode == 0 and f"flotilla runs approve {run_id}" in shown.stdout.decode()

        bad_edit = flotilla(tmp_path, url, "runs", "approve", run_id, "--as", "alice", "--edit", "decision")
        assert bad_edit.returncode == 2 and "FIELD=VALUE" in bad_edit.stderr.decode()
        approved = flotilla(tmp_path, url, "runs", "approve", run_id, "--as", "alice", "--reason", "fine", "--edit", "decision=reject", "--json")
        assert approved.returncode == 0, approved.stderr.decode()
        result = json.loads(approved.stdout)
        assert result["status"] == "succeeded" and "has been rejected" in result["output"]["body"]

        again = flotilla(tmp_path, url, "runs", "reject", run_id, "--as", "bob", "--reason", "no")
        assert again.returncode == 2 and "not waiting for approval" in again.stderr.decode() and "Traceback" not in again.stderr.decode()
        unknown = flotilla(tmp_path, url, "runs", "approve", "nope", "--as", "bob")
        assert unknown.returncode == 2 and "no run 'nope'" in unknown.stderr.decode()

        printed = flotilla(tmp_path, url, "run", workflow, "--input", sample)  # as a person sees it
        assert printed.returncode == 5, printed.stderr.decode()
        out = printed.stdout.decode()
        assert "waiting for approval of decide" in out and "condition holds: extract.total > 1000" in out
        second = next(line.split()[4] for line in out.splitlines() if line.strip().startswith("reject:"))
        assert f"flotilla runs approve {second} --as NAME" in out
        rejected = flotilla(tmp_path, url, "runs", "reject", second, "--as", "bob", "--reason", "duplicate of an earlier invoice")
        assert rejected.returncode == 0, rejected.stderr.decode()
        assert "approval_rejected" in rejected.stdout.decode() or "blocked" in rejected.stdout.decode()
        audit = flotilla(tmp_path, url, "audit", "verify")
        assert audit.returncode == 0, audit.stderr.decode()
