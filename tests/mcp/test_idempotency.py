"""No duplicated side effects: idempotency keys on MCP tool calls, the ledger honouring them, the
tool-call journal, and a call that may have happened surfaced for review — against the real
ledger server, a real non-idempotent third-party-style server, and a process really killed."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from flotilla.audit.sanitize import Sanitizer
from flotilla.audit.setup import audit_exporters
from flotilla.audit.store import AuditStore
from flotilla.audit.telemetry import Telemetry
from flotilla.graphs import load_workflow
from flotilla.mcp_servers.ledger import build_database
from flotilla.tools import IDEMPOTENCY_META_KEY, ToolCallJournal, open_hub, tool_call_scope
from flotilla.tools.idempotency import CallScope, idempotency_key
from tests.mcp.crash_after_send import build_runner
from tests.mcp.helpers import FAULT_SERVER, REPO

CRASH = Path(__file__).with_name("crash_after_send.py")


def writable_ledger(db: Path) -> dict[str, object]:
    return {"command": sys.executable, "args": ["-m", "flotilla.mcp_servers.ledger", "--db", str(db), "--writable"], "cwd": str(REPO)}


def decisions(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT count(*) FROM triage_decisions").fetchone()[0]


def workflow(tmp: Path, tool: str, arguments: dict[str, object]) -> Path:
    path = tmp / f"{tool.replace('.', '_')}.yaml"
    spec = {
        "name": "record_decision",
        "description": "One side-effecting tool call.",
        "input": {"type": "text"},
        "agents": {"record": {"role": "Records the decision.", "tool": tool, "arguments": arguments}},
        "edges": [],
    }
    path.write_text(json.dumps(spec))
    return path


@pytest.fixture
def ledger_db(tmp_path: Path) -> Path:
    return build_database(tmp_path / "ledger.sqlite")


async def test_the_same_write_twice_with_one_key_writes_once(tmp_path: Path, ledger_db: Path) -> None:
    from flotilla.tools import StdioServerConfig

    hub = open_hub({"ledger": StdioServerConfig(**writable_ledger(ledger_db))}, lock_file=tmp_path / "mcp.lock.json")
    async with hub:
        tools = {t.tool.name: t for t in await hub.tools()}
        write, read = tools["record_decision"], tools["find_vendor"]
        # Honest annotations: the write is neither read-only nor idempotent, but honours keys.
        assert not write.read_only and not write.tool.annotations.idempotent_hint and write.honours_keys and write.retry_safe
        assert read.read_only and read.tool.annotations.idempotent_hint and not read.honours_keys

        args = {"invoice_number": "INV-7", "decision": "approve", "total": 120.5}
        with tool_call_scope("run-1", "record@3"):
            first = await hub.call("ledger.record_decision", args)
            again = await hub.call("ledger.record_decision", args)
        assert first.idempotency_key == again.idempotency_key == idempotency_key("ledger.record_decision", args, 0, CallScope("run-1", "record@3"))
        assert first.structured["replayed"] is False and again.structured["replayed"] is True
        assert again.structured["decision_id"] == first.structured["decision_id"]
        assert decisions(ledger_db) == 1

        # Another step (or another run) is another call: its own key, its own row.
        with tool_call_scope("run-2", "record@3"):
            other = await hub.call("ledger.record_decision", args)
        assert other.idempotency_key != first.idempotency_key and other.structured["replayed"] is False
        # Outside any run each call gets a fresh random key: two calls, two rows.
        await hub.call("ledger.record_decision", args)
        await hub.call("ledger.record_decision", args)
        assert decisions(ledger_db) == 4

        # A key reused for a different call is refused by the server, and writes nothing.
        refused = await hub.connection("ledger").call_tool(
            "record_decision", {**args, "decision": "reject"}, meta={IDEMPOTENCY_META_KEY: first.idempotency_key}
        )
        assert refused.is_error and "was first used for a different call" in refused.content[0].text
        assert decisions(ledger_db) == 4
        listed = await hub.call("ledger.list_decisions", {"invoice_number": "inv-7"})
        assert listed.structured["count"] == 4


def crash_after_send(tmp: Path, spec: Path, run_id: str, text: str, servers: dict[str, object], mode: str = "unrecorded") -> None:
    """Run the workflow in a child process that is SIGKILLed right after the call is answered
    (`unrecorded`: before the journal has its result; `recorded`: after, before the checkpoint)."""
    done = subprocess.run(
        [sys.executable, str(CRASH), str(tmp), str(spec), run_id, text, json.dumps(servers), mode],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == -9, done.stderr[-2000:]


def traced(tmp: Path) -> tuple[Telemetry, AuditStore]:
    store = AuditStore(f"sqlite:///{tmp / 'audit.sqlite'}")
    return Telemetry(audit_exporters(store, Sanitizer("off"), otlp=False)), store


async def test_a_resumed_run_after_the_process_died_right_after_a_write_does_not_write_again(tmp_path: Path, ledger_db: Path) -> None:
    servers = {"ledger": writable_ledger(ledger_db)}
    spec = workflow(tmp_path, "ledger.record_decision", {"invoice_number": "{input}", "decision": "hold"})
    crash_after_send(tmp_path, spec, "run-crashed", "INV-2026-0412", servers)
    assert decisions(ledger_db) == 1  # the write happened; its result was never recorded
    journal = ToolCallJournal(f"sqlite:///{tmp_path / 'runs.sqlite'}")
    (entry,) = journal.entries("run-crashed")
    assert entry.state == "started" and entry.tool == "ledger.record_decision" and entry.step.startswith("record@")

    telemetry, store = traced(tmp_path)
    runner = build_runner(tmp_path, servers, journal, telemetry)
    try:
        result = await runner.resume(load_workflow(spec), "run-crashed")
    finally:
        await runner.aclose()
        await runner.tools.aclose()
        telemetry.shutdown()
    assert result.status == "succeeded", result.error
    # The step ran again and re-sent the call with the SAME key; the ledger returned the first result.
    assert result.output["replayed"] is True and decisions(ledger_db) == 1
    assert journal.entries("run-crashed") == []  # the run is done: its journal entries (raw results) are gone

    # The key is on the call's span, in the hash-chained audit store.
    calls = [r.payload["attributes"] for r in store.run_records("run-crashed") if r.kind == "span" and r.payload["name"] == "execute_tool ledger.record_decision"]
    assert [c["flotilla.tool.idempotency_key"] for c in calls] == [entry.key]
    assert calls[0]["flotilla.tool.resent"] is True
    assert store.verify().ok
    store.close()


async def test_a_recorded_call_is_not_sent_again_when_its_step_reruns(tmp_path: Path, ledger_db: Path) -> None:
    """The process died after the call's result was journaled but before the step's checkpoint:
    the step runs again on resume and gets the journaled result; nothing reaches the server."""
    servers = {"ledger": writable_ledger(ledger_db)}
    spec = workflow(tmp_path, "ledger.record_decision", {"invoice_number": "{input}", "decision": "approve"})
    crash_after_send(tmp_path, spec, "run-twice", "INV-9", servers, mode="recorded")
    journal = ToolCallJournal(f"sqlite:///{tmp_path / 'runs.sqlite'}")
    (entry,) = journal.entries("run-twice")
    assert entry.state == "finished" and decisions(ledger_db) == 1

    telemetry, store = traced(tmp_path)
    runner = build_runner(tmp_path, servers, journal, telemetry)
    try:
        result = await runner.resume(load_workflow(spec), "run-twice")
    finally:
        await runner.aclose()
        await runner.tools.aclose()
        telemetry.shutdown()
    assert result.status == "succeeded", result.error
    assert result.output == entry.result["structuredContent"] and result.output["replayed"] is False  # the first answer
    assert decisions(ledger_db) == 1
    (call,) = [r.payload["attributes"] for r in store.run_records("run-twice") if r.payload.get("name") == "execute_tool ledger.record_decision"]
    assert call["flotilla.tool.replayed"] is True and call["flotilla.tool.idempotency_key"] == entry.key
    store.close()


async def test_an_uncertain_call_to_a_non_idempotent_tool_is_surfaced_for_review(tmp_path: Path) -> None:
    calls_log = tmp_path / "calls.log"
    fault = {"command": sys.executable, "args": [str(FAULT_SERVER)], "env": {"FAULT_CALL_LOG": str(calls_log)}, "cwd": str(REPO)}
    spec = workflow(tmp_path, "fault.slow_write", {"seconds": 0})
    crash_after_send(tmp_path, spec, "run-uncertain", "write it", {"fault": fault})
    assert calls_log.read_text().split() == ["slow_write"]

    journal = ToolCallJournal(f"sqlite:///{tmp_path / 'runs.sqlite'}")
    runner = build_runner(tmp_path, {"fault": fault}, journal)
    try:
        result = await runner.resume(load_workflow(spec), "run-uncertain")
    finally:
        await runner.aclose()
        await runner.tools.aclose()
    assert result.status == "needs_review"
    (reason,) = result.error["reasons"]
    assert reason["step"] == "record"
    assert "fault.slow_write" in reason["reason"] and "may or may not have taken effect" in reason["reason"]
    assert calls_log.read_text().split() == ["slow_write"]  # not sent a second time
    assert result.steps[-1]["error"]["code"] == "tool_call_uncertain"


async def test_the_agent_tool_loop_keys_calls_by_turn_and_stops_on_an_uncertain_call(tmp_path: Path, spans) -> None:
    from flotilla.agents.models.base import ChatRequest
    from flotilla.agents.models.testing import FunctionModel
    from flotilla.agents.tool_loop import run_tool_loop
    from flotilla.tools import StdioServerConfig, ToolCallUncertain

    provider, exporter = spans
    calls_log = tmp_path / "calls.log"
    fault = StdioServerConfig(command=sys.executable, args=[str(FAULT_SERVER)], env={"FAULT_CALL_LOG": str(calls_log)}, cwd=REPO)
    output = {"type": "object", "properties": {"done": {"type": "boolean"}}, "required": ["done"]}
    messages = [{"role": "user", "content": "Write it."}]

    def scripted() -> FunctionModel:
        script = iter([{"tool": "fault.slow_write", "arguments": {"seconds": 0}}, {"final": {"done": True}}])
        return FunctionModel(lambda request: json.dumps(next(script)))

    journal = ToolCallJournal(f"sqlite:///{tmp_path / 'journal.sqlite'}")
    async with open_hub({"fault": fault}, lock_file=tmp_path / "mcp.lock.json", tracer=provider.get_tracer("t"), journal=journal) as hub:
        view = hub.view(["fault.slow_write"])
        with tool_call_scope("run-a", "check@2"):
            result = await run_tool_loop(messages, view, scripted(), output, tracer=provider.get_tracer("t"))
        assert result.output == {"done": True}
        # The call of turn 1 carries the key derived from the run, the step and the turn.
        expected = idempotency_key("fault.slow_write", {"seconds": 0}, 1, CallScope("run-a", "check@2"))
        (span,) = [s for s in exporter.get_finished_spans() if s.name == "execute_tool fault.slow_write"]
        assert span.attributes["flotilla.tool.idempotency_key"] == expected
        assert journal.get(expected).state == "finished"

        # Another run whose process died after sending the same turn's call: the loop stops, nothing is re-sent.
        other = idempotency_key("fault.slow_write", {"seconds": 0}, 1, CallScope("run-b", "check@2"))
        journal.start(other, run_id="run-b", step="check@2", tool="fault.slow_write")
        with tool_call_scope("run-b", "check@2"), pytest.raises(ToolCallUncertain) as stopped:
            await run_tool_loop(messages, view, scripted(), output, tracer=provider.get_tracer("t"))
    assert other in stopped.value.message and "not sent again" in stopped.value.message
    assert calls_log.read_text().split() == ["slow_write"]


async def test_an_agent_step_with_an_uncertain_call_ends_the_run_needs_review(tmp_path: Path) -> None:
    from flotilla.agents.models.testing import FunctionModel

    calls_log = tmp_path / "calls.log"
    fault = {"command": sys.executable, "args": [str(FAULT_SERVER)], "env": {"FAULT_CALL_LOG": str(calls_log)}, "cwd": str(REPO)}
    (tmp_path / "writer.md").write_text("Write it, then say you are done.")
    (tmp_path / "done.json").write_text(json.dumps({"type": "object", "properties": {"done": {"type": "boolean"}}, "required": ["done"]}))
    spec_path = tmp_path / "agent_writes.yaml"
    spec_path.write_text(json.dumps({
        "name": "agent_writes", "description": "An agent with a side-effecting tool.", "input": {"type": "text"},
        "agents": {"writer": {"role": "Writes.", "instructions": "writer.md", "output_schema": "done.json", "model": "specialist", "tools": ["fault.slow_write"]}},
        "edges": [],
    }))

    def model() -> FunctionModel:
        def respond(request) -> str:  # a tool call first, then the answer
            turns = sum(1 for m in request.messages if m["role"] == "assistant")
            return json.dumps({"tool": "fault.slow_write", "arguments": {"seconds": 0}} if turns == 0 else {"final": {"done": True}})
        return FunctionModel(respond)

    class Remembering(ToolCallJournal):
        steps: list[str] = []

        def start(self, key: str, *, run_id: str, step: str, tool: str) -> None:
            self.steps.append(step)
            super().start(key, run_id=run_id, step=step, tool=tool)

    journal = Remembering(f"sqlite:///{tmp_path / 'runs.sqlite'}")
    runner = build_runner(tmp_path, {"fault": fault}, journal, model=model())
    try:
        spec = load_workflow(spec_path)
        first = await runner.run(spec, "go", run_id="run-a")
        assert first.status == "succeeded", first.error
        (step,) = journal.steps
        assert step.startswith("writer@")
        # Run b's process died after sending the same call (same step, same turn): recorded as started only.
        key = idempotency_key("fault.slow_write", {"seconds": 0}, 1, CallScope("run-b", step))
        journal.start(key, run_id="run-b", step=step, tool="fault.slow_write")
        second = await runner.run(spec, "go", run_id="run-b")
    finally:
        await runner.aclose()
        await runner.tools.aclose()
    assert second.status == "needs_review", second.error
    assert second.error["reasons"][0]["step"] == "writer" and key in second.error["reasons"][0]["reason"]
    assert calls_log.read_text().split() == ["slow_write"]  # run a's call only


async def test_the_document_workflow_records_its_decision_once_across_a_crash(tmp_path: Path, ledger_db: Path) -> None:
    """graphs/samples/document_triage_recorded.yaml (what the crash trials run): killed right after
    its ledger write, resumed, one decision in the ledger and the note as the run's output."""
    servers = {"ledger": writable_ledger(ledger_db)}
    spec = REPO / "graphs" / "samples" / "document_triage_recorded.yaml"
    invoice = (REPO / "graphs" / "samples" / "invoice.txt").read_text()
    crash_after_send(tmp_path, spec, "run-triage", invoice, servers)
    assert decisions(ledger_db) == 1

    runner = build_runner(tmp_path, servers, ToolCallJournal(f"sqlite:///{tmp_path / 'runs.sqlite'}"))
    try:
        result = await runner.resume(load_workflow(spec), "run-triage")
    finally:
        await runner.aclose()
        await runner.tools.aclose()
    assert result.status == "succeeded", result.error
    assert [s["agent"] for s in result.steps][-2:] == ["write", "record"]
    assert result.output["body"].startswith("Your invoice INV-2026-0412")
    with sqlite3.connect(ledger_db) as conn:
        assert conn.execute("SELECT invoice_number, decision, total FROM triage_decisions").fetchall() == [("INV-2026-0412", "approve", 2734.8)]


async def test_a_server_the_operator_says_honours_keys_gets_an_uncertain_call_again_with_its_key(tmp_path: Path, spans) -> None:
    from flotilla.tools import StdioServerConfig

    provider, exporter = spans
    calls_log = tmp_path / "calls.log"
    fault = StdioServerConfig(
        command=sys.executable, args=[str(FAULT_SERVER)], env={"FAULT_CALL_LOG": str(calls_log)}, cwd=REPO, honours_idempotency_keys=True
    )
    journal = ToolCallJournal(f"sqlite:///{tmp_path / 'journal.sqlite'}")
    scope = CallScope("run-c", "write@4:__pregel_pull/write")
    key = idempotency_key("fault.slow_write", {"seconds": 0}, 0, scope)
    journal.start(key, run_id=scope.run_id, step=scope.step, tool="fault.slow_write")  # sent, then the process died
    async with open_hub({"fault": fault}, lock_file=tmp_path / "mcp.lock.json", tracer=provider.get_tracer("t"), journal=journal) as hub:
        with tool_call_scope(scope.run_id, scope.step):
            result = await hub.call("fault.slow_write", {"seconds": 0})
    assert result.text == "wrote after 0.0s" and result.idempotency_key == key and not result.replayed
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "execute_tool fault.slow_write"]
    assert span.attributes["flotilla.tool.resent"] is True and span.attributes["flotilla.tool.idempotency_key"] == key
    assert journal.get(key).state == "finished" and calls_log.read_text().split() == ["slow_write"]


async def test_a_finished_run_forgets_its_journal_entries_and_one_that_journaled_none_skips_the_write(tmp_path: Path, ledger_db: Path) -> None:
    servers = {"ledger": writable_ledger(ledger_db)}
    journal = ToolCallJournal(f"sqlite:///{tmp_path / 'runs.sqlite'}")
    forgotten: list[str] = []
    forget = journal.forget_run
    journal.forget_run = lambda run_id: forgotten.append(run_id) or forget(run_id)  # type: ignore[method-assign]
    runner = build_runner(tmp_path, servers, journal)
    invoice = (REPO / "graphs" / "samples" / "invoice.txt").read_text()
    try:
        writes = await runner.run(load_workflow(REPO / "graphs" / "samples" / "document_triage_recorded.yaml"), invoice, run_id="run-writes")
        reads = await runner.run(load_workflow(workflow(tmp_path, "ledger.find_vendor", {"name": "Northwind"})), "lookup", run_id="run-reads")
    finally:
        await runner.aclose()
        await runner.tools.aclose()
    assert writes.status == "succeeded" and reads.status == "succeeded", (writes.error, reads.error)
    assert journal.entries("run-writes") == [] and decisions(ledger_db) == 1  # its write was journaled, and is forgotten
    assert forgotten == ["run-writes"]  # a read-only run journaled nothing: no delete to commit
