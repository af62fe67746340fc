"""Agents in a workflow reach tools only through MCP: a third-party server from npm
(server-filesystem) and the bundled ledger, through the runner, with records and spans."""

from __future__ import annotations

import json
from pathlib import Path

from flotilla.agents.models.base import ChatRequest
from flotilla.agents.models.testing import FunctionModel
from flotilla.graphs import load_workflow
from tests.support.triage import FOUR_AGENT_TRIAGE
from tests.mcp.helpers import ledger_config, npm_bin
from flotilla.tools import StdioServerConfig, open_hub

from .conftest import TRIAGE_ANSWERS

PROMPTS = Path(__file__).resolve().parents[2] / "agents" / "document_triage"


def scripted(turns: list[dict], answers: dict = TRIAGE_ANSWERS) -> FunctionModel:
    """Tool-loop turns in order for `agent_action` requests; canned answers for the rest."""
    queue = iter(turns)

    def respond(request: ChatRequest) -> str:
        if request.schema_name == "agent_action":
            return json.dumps(next(queue))
        return json.dumps(answers[request.schema_name])

    return FunctionModel(respond)


async def test_an_agent_reads_files_through_the_filesystem_server(harness, tmp_path: Path) -> None:
    files = tmp_path / "files"
    files.mkdir()
    (files / "po.txt").write_text("Purchase order PO-7781 approved for Northwind, GBP 2279.00 net.\n")
    workflow = tmp_path / "fs.yaml"
    workflow.write_text(
        f"""
name: fs_reader
agents:
  decide:
    role: decides from the purchase order on file
    instructions: {PROMPTS / 'decide.md'}
    output_schema: flotilla.agents.document_triage.schemas:Decision
    tools: ["fs.read_text_file", "fs.list_directory"]
"""
    )
    decision = {"decision": "approve", "reasons": ["PO-7781 on file"], "confidence": 0.8}
    model = scripted(
        [
            {"tool": "fs.list_directory", "arguments": {"path": str(files)}},
            {"tool": "fs.read_text_file", "arguments": {"path": str(files / "po.txt")}},
            {"tool": "fs.write_file", "arguments": {"path": str(files / "x"), "content": "x"}},
            {"final": decision},
        ]
    )
    fs = StdioServerConfig(command=str(npm_bin("mcp-server-filesystem")), args=[str(files)])
    h = harness(model, tools=lambda tracer: open_hub({"fs": fs}, lock_file=tmp_path / "mcp.lock.json", tracer=tracer))
    result = await h.runner.run(load_workflow(workflow), "Should we pay PO-7781?")
    assert result.status == "succeeded", result.error
    [step] = result.steps
    assert step["output"] == decision
    listing, read = step["tool_calls"][:2]
    assert "po.txt" in listing["observation"] and "PO-7781 approved" in read["observation"]
    refused = step["tool_calls"][2]
    assert refused["is_error"] and refused["tool"] == "fs.write_file"
    spans = h.spans()
    tools = [s for s in spans if s["name"].startswith("execute_tool")]
    assert {s["attributes"]["gen_ai.tool.name"] for s in tools} >= {"fs.list_directory", "fs.read_text_file"}
    agent_span = next(s for s in spans if s["name"] == "invoke_agent decide")
    assert {s["parent_id"] for s in tools if s["attributes"]["gen_ai.tool.name"] != "fs.write_file"} == {agent_span["context"]["span_id"]}


async def test_document_triage_analyze_checks_the_ledger_over_mcp(harness, tmp_path: Path) -> None:
    model = scripted(
        [
            {"tool": "ledger.find_invoice", "arguments": {"invoice_number": "INV-2026-0412"}},
            {"tool": "ledger.get_purchase_order", "arguments": {"po_number": "PO-7781"}},
            {"final": TRIAGE_ANSWERS["Analysis"]},
        ]
    )
    h = harness(model, tools=lambda tracer: open_hub({"ledger": ledger_config()}, lock_file=tmp_path / "mcp.lock.json", tracer=tracer))
    result = await h.runner.run(load_workflow(FOUR_AGENT_TRIAGE), (PROMPTS.parents[1] / "graphs" / "samples" / "invoice.txt").read_text())
    assert result.status == "succeeded", result.error
    analyze = result.steps[1]
    assert [c["tool"] for c in analyze["tool_calls"]] == ["ledger.find_invoice", "ledger.get_purchase_order"]
    assert "PO-7781" in analyze["tool_calls"][1]["observation"] and not analyze["tool_calls"][1]["is_error"]
    assert (tmp_path / "mcp.lock.json").is_file()  # the ledger's tool descriptions are now pinned
