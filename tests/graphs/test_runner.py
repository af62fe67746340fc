"""Running workflows: routing, repair, typed failures, kept runs, resume, spans, bad input.

The model here is a FunctionModel: these tests are about orchestration logic, which must not
depend on what a real model says. The embedded model's own path is tested in test_demo.py.
"""

from __future__ import annotations

import asyncio
import gc
import json
from pathlib import Path

import pytest

from flotilla.agents.models.base import ChatRequest, ModelUnavailable
from flotilla.agents.models.testing import FunctionModel
from flotilla.graphs import load_workflow
from tests.support.triage import FOUR_AGENT_TRIAGE

from .conftest import TRIAGE_ANSWERS, canned, down_for

PROMPTS = Path(__file__).resolve().parents[2] / "agents" / "document_triage"
INVOICE = (Path(__file__).resolve().parents[2] / "graphs" / "samples" / "invoice.txt").read_text()


async def test_document_triage_runs_every_agent_in_order(harness) -> None:
    h = harness()
    events = []
    result = await h.runner.run(load_workflow(FOUR_AGENT_TRIAGE), INVOICE, initiator="test", on_event=events.append)
    assert result.status == "succeeded", result.error
    assert [s["agent"] for s in result.steps] == ["extract", "analyze", "decide", "write"]
    assert result.output == TRIAGE_ANSWERS["Note"]
    assert all(s["ok"] and s["model"] == "function-model" for s in result.steps)
    assert [e.kind for e in events] == ["started", *["notice"] * 4, *["step"] * 4, "finished"]
    assert any("has no endpoint configured" in n for n in result.notices)
    record = h.runs.get_run(result.run_id)
    assert record.status == "succeeded" and record.input == INVOICE and len(record.steps) == 4
    assert result.steps[2]["output"]["decision"] == "approve"  # every check passed on the real sample


async def test_spans_nest_run_agent_model_with_genai_attributes(harness) -> None:
    h = harness()
    result = await h.runner.run(load_workflow(FOUR_AGENT_TRIAGE), INVOICE)
    spans = {s["context"]["span_id"]: s for s in h.spans()}
    [run] = [s for s in spans.values() if s["name"] == "invoke_workflow document_triage"]
    assert run["attributes"]["flotilla.run_id"] == result.run_id
    agents = [s for s in spans.values() if s["name"].startswith("invoke_agent")]
    assert {s["parent_id"] for s in agents} == {run["context"]["span_id"]}
    chats = [s for s in spans.values() if s["name"].startswith("chat")]
    assert len(chats) == 4 and {spans[c["parent_id"]]["name"] for c in chats} == {s["name"] for s in agents}
    attrs = chats[0]["attributes"]
    assert attrs["gen_ai.operation.name"] == "chat" and attrs["gen_ai.usage.output_tokens"] > 0
    assert attrs["gen_ai.provider.name"] == "function" and "gen_ai.request.model" in attrs


async def test_policy_turns_approve_into_hold_when_checks_fail(harness) -> None:
    answers = {**TRIAGE_ANSWERS, "Invoice": {**TRIAGE_ANSWERS["Invoice"], "total": 2279.0}}  # in the text, but wrong
    result = await harness(canned(answers)).runner.run(load_workflow(FOUR_AGENT_TRIAGE), INVOICE)
    decide = result.steps[2]
    assert decide["output"]["decision"] == "hold"
    assert "total_matches" in decide["notes"][0]


async def test_not_an_invoice_still_finishes_with_hold(harness) -> None:
    nothing = {k: None for k in TRIAGE_ANSWERS["Invoice"]} | {"line_items": []}
    result = await harness(canned({**TRIAGE_ANSWERS, "Invoice": nothing})).runner.run(load_workflow(FOUR_AGENT_TRIAGE), "a poem about the sea")
    assert result.status == "succeeded"
    assert result.steps[0]["output"]["vendor"] is None
    assert result.steps[2]["output"]["decision"] == "hold"
    assert "not a complete invoice" in result.steps[2]["output"]["reasons"][0]
    assert "changed to hold" in result.steps[2]["notes"][0]


async def test_invalid_reply_is_repaired_once(harness) -> None:
    replies = iter(['{"decision": "maybe"}'])

    def respond(request: ChatRequest) -> str:
        if request.schema_name == "Decision":
            nxt = next(replies, None)
            if nxt is not None:
                return nxt
        return json.dumps(TRIAGE_ANSWERS[request.schema_name])

    model = FunctionModel(respond)
    result = await harness(model).runner.run(load_workflow(FOUR_AGENT_TRIAGE), INVOICE)
    assert result.status == "succeeded"
    assert result.steps[2]["repaired"] is True
    repair_prompt = model.requests[3].messages[-1]["content"]
    assert "not valid" in repair_prompt and "decision" in repair_prompt


async def test_reply_still_invalid_after_repair_ends_the_run_needs_review_and_keeps_it(harness) -> None:
    def respond(request: ChatRequest) -> str:
        return "not json" if request.schema_name == "Analysis" else json.dumps(TRIAGE_ANSWERS[request.schema_name])

    h = harness(FunctionModel(respond))
    result = await h.runner.run(load_workflow(FOUR_AGENT_TRIAGE), INVOICE)
    # Its only tier failed validation after the repair: a person must look, nothing is pretended.
    assert result.status == "needs_review"
    assert result.error["type"] == "NeedsReview" and result.error["step"] == "analyze" and "Analysis" in result.error["message"]
    assert [s["ok"] for s in result.steps] == [True, False]
    [attempt] = result.steps[1]["attempts"]
    assert attempt["ok"] is False and "agent_output_invalid" in attempt["reasons"][0]
    record = h.runs.get_run(result.run_id)
    assert record.status == "needs_review" and record.input == INVOICE and record.error["code"] == "needs_review"
    failed = [s for s in h.spans() if s["name"] == "invoke_agent analyze"]
    assert failed[0]["status"]["status_code"] == "ERROR"


async def test_resume_continues_from_the_last_completed_step(harness) -> None:
    model, down = down_for("Decision")
    h = harness(model)
    spec = load_workflow(FOUR_AGENT_TRIAGE)
    first = await h.runner.run(spec, INVOICE)
    assert first.status == "failed" and first.error["code"] == "model_unavailable"
    calls_before = len(model.requests)

    down["yes"] = False
    second = await h.runner.resume(spec, first.run_id)
    assert second.status == "succeeded", second.error
    assert [r.schema_name for r in model.requests[calls_before:]] == ["Decision", "Note"]
    assert [s["agent"] for s in second.steps] == ["extract", "analyze", "decide", "write"]
    assert h.runs.get_run(first.run_id).status == "succeeded"


async def test_switch_edges_route_on_an_output_field(harness, tmp_path: Path) -> None:
    workflow = tmp_path / "route.yaml"
    workflow.write_text(
        f"""
name: route
agents:
  decide: {{role: d, instructions: {PROMPTS / 'decide.md'}, output_schema: flotilla.agents.document_triage.schemas:Decision}}
  write: {{role: w, instructions: {PROMPTS / 'write.md'}, output_schema: flotilla.agents.document_triage.schemas:Note}}
edges:
  - {{from: decide, switch: decide.decision, cases: {{reject: END}}, default: write}}
"""
    )
    spec = load_workflow(workflow)
    approve = await harness().runner.run(spec, "x")
    assert [s["agent"] for s in approve.steps] == ["decide", "write"]
    rejecting = {**TRIAGE_ANSWERS, "Decision": {"decision": "reject", "reasons": ["wrong"], "confidence": 1.0}}
    reject = await harness(canned(rejecting)).runner.run(spec, "x")
    assert [s["agent"] for s in reject.steps] == ["decide"]
    assert reject.output["decision"] == "reject"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "input is empty"),
        (b"   \n\t ", "input is empty"),
        (b"\xff\xfe invoice", "not UTF-8"),
        (b"x" * 2000, "the limit is 1,000"),
    ],
)
async def test_bad_input_is_a_typed_error_and_the_run_is_kept(harness, data: bytes, expected: str) -> None:
    h = harness(max_input_bytes=1000)
    result = await h.runner.run(load_workflow(FOUR_AGENT_TRIAGE), data)
    assert result.status == "failed"
    assert result.error["code"] == "invalid_input" and expected in result.error["message"]
    assert h.runs.get_run(result.run_id).status == "failed"
    assert any(s["name"] == "invoke_workflow document_triage" for s in h.spans())



async def test_concurrent_first_runs_share_one_checkpointer_and_later_runs_still_work(harness) -> None:
    # A fresh runner (as in `flotilla serve` at start-up) receiving many runs at once: each used
    # to open its own checkpointer, and the losers' collection closed the one the graph kept.
    h = harness()
    spec = load_workflow(FOUR_AGENT_TRIAGE)
    results = await asyncio.gather(*(h.runner.run(spec, INVOICE) for _ in range(50)))
    assert [r.status for r in results] == ["succeeded"] * 50, [r.error for r in results if r.error]
    gc.collect()  # what closed the shared connection before
    later = await h.runner.run(spec, INVOICE)
    assert later.status == "succeeded", later.error
    assert len({r.run_id for r in [*results, later]}) == 51
