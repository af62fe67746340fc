"""The agent tool loop's logic, driven by a scripted model against real MCP servers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from opentelemetry.trace import SpanKind

from flotilla.agents.models.base import ChatRequest
from flotilla.agents.models.testing import FunctionModel
from flotilla.agents.tool_loop import ToolLoopExhausted, action_schema, run_tool_loop
from tests.mcp.helpers import fault_config, ledger_config
from flotilla.tools import open_hub

OUTPUT = {
    "type": "object",
    "properties": {"po_matches": {"type": "boolean"}, "vendor_id": {"type": "string"}},
    "required": ["po_matches", "vendor_id"],
    "additionalProperties": False,
}
MESSAGES = [
    {"role": "system", "content": "You check supplier invoices against the ledger."},
    {"role": "user", "content": "Invoice INV-2026-0412 from Northwind, PO-7781, net 2279.00 GBP."},
]


def _branches(request: ChatRequest) -> list[str]:
    schema = request.json_schema or {}
    branches = schema.get("anyOf", [schema])
    return [b["properties"]["tool"]["const"] if "tool" in b["properties"] else "final" for b in branches]


async def test_scripted_model_calls_tools_sees_errors_and_answers(tmp_path: Path, lock_file: Path, spans) -> None:
    provider, exporter = spans
    script = iter(
        [
            {"tool": "ledger.get_purchase_order", "arguments": {"po_number": 7781}},  # schema violation
            {"tool": "ledger.get_purchase_order", "arguments": {"po_number": "PO-0000"}},  # isError from the server
            {"tool": "ledger.list_payments", "arguments": {"vendor": "V-1001"}},  # not allowed
            {"tool": "ledger.get_purchase_order", "arguments": {"po_number": "PO-7781"}},
            {"tool": "ledger.get_purchase_order", "arguments": {"po_number": "PO-7781"}},  # repeat: not re-sent
            {"final": {"po_matches": True, "vendor_id": "V-1001"}},
        ]
    )
    offered: list[list[str]] = []

    def respond(request: ChatRequest) -> str:
        offered.append(_branches(request))
        return json.dumps(next(script))

    model = FunctionModel(respond)
    servers = {"ledger": ledger_config(), "fault": fault_config(tmp_path)}
    async with open_hub(servers, lock_file=lock_file, tracer=provider.get_tracer("t")) as hub:
        view = hub.view(["ledger.get_purchase_order", "ledger.find_*"])
        result = await run_tool_loop(MESSAGES, view, model, OUTPUT, max_steps=8, tracer=provider.get_tracer("t"))

    assert result.output == {"po_matches": True, "vendor_id": "V-1001"}
    assert result.steps == 6
    assert sorted(offered[0]) == ["final", "ledger.find_invoice", "ledger.find_vendor", "ledger.get_purchase_order"]
    assert [(c.tool, c.is_error, c.error_code) for c in result.calls] == [
        ("ledger.get_purchase_order", True, "tool_arguments_invalid"),
        ("ledger.get_purchase_order", True, None),
        ("ledger.list_payments", True, "tool_not_allowed"),
        ("ledger.get_purchase_order", False, None),
    ]
    assert "no purchase order 'PO-0000'" in result.calls[1].observation
    assert json.loads(result.calls[3].observation)["net_total"] == 2279
    # every observation went back to the model
    last_prompt = "\n".join(m["content"] for m in model.requests[-1].messages)
    assert "TOOL ERROR ledger.get_purchase_order" in last_prompt and "TOOL RESULT ledger.get_purchase_order" in last_prompt
    assert "already called ledger.get_purchase_order" in last_prompt
    names = [s.name for s in exporter.get_finished_spans()]
    assert names.count("execute_tool ledger.get_purchase_order") == 3
    assert names.count("chat function-model") == 6


async def test_last_step_offers_only_the_final_answer(lock_file: Path) -> None:
    offered: list[list[str]] = []

    def respond(request: ChatRequest) -> str:
        offered.append(_branches(request))
        if offered[-1] == ["final"]:
            return json.dumps({"final": {"po_matches": False, "vendor_id": "unknown"}})
        return json.dumps({"tool": "ledger.find_vendor", "arguments": {"name": f"north{len(offered)}"}})

    async with open_hub({"ledger": ledger_config()}, lock_file=lock_file) as hub:
        result = await run_tool_loop(MESSAGES, hub.view(["ledger.find_vendor"]), FunctionModel(respond), OUTPUT, max_steps=3)
    assert offered == [["ledger.find_vendor", "final"], ["ledger.find_vendor", "final"], ["final"]]
    assert len(result.calls) == 2 and result.output["vendor_id"] == "unknown"


async def test_no_valid_final_answer_is_a_typed_error(lock_file: Path) -> None:
    model = FunctionModel(lambda request: json.dumps({"final": {"po_matches": "yes"}}))
    async with open_hub({"ledger": ledger_config()}, lock_file=lock_file) as hub:
        with pytest.raises(ToolLoopExhausted, match="no valid final answer within 2 steps"):
            await run_tool_loop(MESSAGES, hub.view(["ledger.*"]), model, OUTPUT, max_steps=2)
    assert "does not match the output format" in model.requests[-1].messages[-2]["content"]


def test_action_schema_hoists_definitions_so_refs_resolve() -> None:
    from jsonschema import validators

    output = {"type": "object", "properties": {"item": {"$ref": "#/$defs/Item"}}, "$defs": {"Item": {"type": "integer"}}}
    schema = action_schema([], output)
    validator = validators.validator_for(schema)(schema)
    assert validator.is_valid({"final": {"item": 3}})
    assert not validator.is_valid({"final": {"item": "x"}})


async def test_http_model_uses_native_openai_tool_calling(lock_file: Path, spans) -> None:
    from flotilla.agents.models.openai_compat import OpenAICompatibleClient
    from tests.mcp.servers.tool_calling_openai import ScriptedToolCaller, final, tool_call
    from tests.support.servers import serve_app

    scripted = ScriptedToolCaller(
        [
            {
                "tool_calls": [
                    tool_call("c1", "ledger__get_purchase_order", {"po_number": "PO-7781"}),
                    tool_call("c2", "ledger__list_payments", {"vendor": "V-1001"}),
                ]
            },
            {"tool_calls": [tool_call("c3", "ledger__find_vendor", {"name": 42})]},
            final({"po_matches": True, "vendor_id": "V-1001"}),
        ]
    )
    with serve_app(scripted.app()) as url:
        model = OpenAICompatibleClient(base_url=f"{url}/v1", model="scripted-tools", max_retries=0)
        provider, exporter = spans
        tracer = provider.get_tracer("t")
        async with open_hub({"ledger": ledger_config()}, lock_file=lock_file, tracer=tracer) as hub:
            view = hub.view(["ledger.get_purchase_order", "ledger.find_vendor"])
            result = await run_tool_loop(MESSAGES, view, model, OUTPUT, max_steps=4, tracer=tracer, mode="native")
        await model.aclose()

    assert result.output == {"po_matches": True, "vendor_id": "V-1001"} and result.steps == 3
    first, second, third = scripted.requests
    assert sorted(t["function"]["name"] for t in first["tools"]) == ["ledger__find_vendor", "ledger__get_purchase_order"]
    assert first["tool_choice"] == "auto" and first["response_format"]["json_schema"]["schema"] == OUTPUT
    tool_messages = [m for m in second["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_messages] == ["c1", "c2"]
    assert json.loads(tool_messages[0]["content"])["net_total"] == 2279
    assert "not in this agent's" in tool_messages[1]["content"]
    assert second["messages"][-3]["tool_calls"][0]["function"]["name"] == "ledger__get_purchase_order"
    assert "name: 42 is not valid" in third["messages"][-1]["content"]
    assert [(c.tool, c.error_code) for c in result.calls] == [
        ("ledger.get_purchase_order", None),
        ("ledger.list_payments", "tool_not_allowed"),
        ("ledger.find_vendor", "tool_arguments_invalid"),
    ]
    # GenAI conventions (semantic-conventions-genai model/gen-ai/spans.yaml): the model's call ids
    # on the execute_tool spans; HTTP chat calls are CLIENT spans of provider `openai`.
    finished = exporter.get_finished_spans()
    tool_ids = {s.attributes["gen_ai.tool.name"]: s.attributes.get("gen_ai.tool.call.id") for s in finished if s.name.startswith("execute_tool ")}
    assert tool_ids == {"ledger.get_purchase_order": "c1", "ledger.list_payments": "c2", "ledger.find_vendor": "c3"}
    chats = [s for s in finished if s.name == "chat scripted-tools"]
    assert len(chats) == 3 and all(s.kind is SpanKind.CLIENT and s.attributes["gen_ai.provider.name"] == "openai" for s in chats)


async def test_action_schema_compiles_to_an_xgrammar_grammar(lock_file: Path) -> None:
    """The embedded engine constrains decoding with xgrammar: the tool-or-final union built from
    real servers' schemas must compile, accept a well-formed call and refuse a made-up tool."""
    import xgrammar as xgr
    from xgrammar.testing import _is_grammar_accept_string

    async with open_hub({"ledger": ledger_config()}, lock_file=lock_file) as hub:
        usable = await hub.view(["ledger.find_vendor", "ledger.get_purchase_order"]).usable()
    grammar = xgr.Grammar.from_json_schema(json.dumps(action_schema(usable, OUTPUT)), strict_mode=True)
    accepts = lambda text: _is_grammar_accept_string(grammar, text)  # noqa: E731
    assert accepts('{"tool": "ledger.get_purchase_order", "arguments": {"po_number": "PO-7781"}}')
    assert accepts('{"final": {"po_matches": true, "vendor_id": "V-1001"}}')
    assert not accepts('{"tool": "ledger.list_payments", "arguments": {"vendor": "V-1001"}}')
    assert not accepts('{"tool": "ledger.get_purchase_order", "arguments": {"po_number": 7781}}')
