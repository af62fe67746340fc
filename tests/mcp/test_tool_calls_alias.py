"""The tool-calling mode is an alias setting (`tool_calls: native | json`, default json), and a
tool loop's model calls over HTTP go through the run's guard like every other model call: their
tokens, cost and locality land in the run's ledger and on the chat spans, budgets apply."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flotilla.agents.models.policy import BudgetExhausted, ModelPrice, PriceTable, RemoteModelRefused, RunLedger, RunPolicy, run_scope
from flotilla.agents.models.registry import ModelEndpoint, ModelRegistry
from flotilla.agents.tool_loop import run_tool_loop
from flotilla.audit.errors import ConfigError
from flotilla.runtime.wiring import _http_client
from flotilla.tools import open_hub
from tests.mcp.helpers import ledger_config
from tests.mcp.servers.tool_calling_openai import ScriptedToolCaller, final, tool_call
from tests.support.scripted_openai import Reply, ScriptedOpenAI
from tests.support.servers import serve_app

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
PRICES = PriceTable({"checker": ModelPrice(input_per_mtok=1_000_000, output_per_mtok=2_000_000)})


def registry(url: str, **endpoint: object) -> ModelRegistry:
    alias = ModelEndpoint(provider="openai-compatible", base_url=f"{url}/v1", model="scripted", max_retries=0, **endpoint)
    return ModelRegistry({"checker": alias}, embedded=lambda: None, http_client=_http_client, prices=PRICES)


def chats(exporter) -> list:
    return [s for s in exporter.get_finished_spans() if s.name.startswith("chat ")]


def test_tool_calls_is_json_unless_the_alias_says_native() -> None:
    assert ModelEndpoint(provider="openai-compatible", base_url="http://x/v1", model="m").tool_calls == "json"
    assert ModelEndpoint(tool_calls="native").tool_calls == "native"
    with pytest.raises(ValueError, match="tool_calls"):
        ModelEndpoint(tool_calls="auto")
    from flotilla.runtime.settings import load_settings

    with pytest.raises((ConfigError, ValueError), match="tool_calls"):
        load_settings(models={"checker": {"provider": "openai-compatible", "base_url": "http://x/v1", "model": "m", "tool_calls": "yes"}})


async def test_default_alias_sends_the_constrained_json_protocol_and_is_accounted(lock_file: Path, spans) -> None:
    """A stock `vllm serve` has no tool parser: the default sends no `tools`, only the JSON schema of
    `{tool, arguments} | {final}`; every turn's tokens and cost are on the run's ledger and spans."""
    replies = [
        Reply(json.dumps({"tool": "ledger.get_purchase_order", "arguments": {"po_number": "PO-7781"}})),
        Reply(json.dumps({"final": {"po_matches": True, "vendor_id": "V-1001"}})),
    ]
    server = ScriptedOpenAI(script=replies)
    provider, exporter = spans
    tracer = provider.get_tracer("t")
    with serve_app(server.app()) as url:
        client = registry(url).resolve("checker").client
        async with open_hub({"ledger": ledger_config()}, lock_file=lock_file, tracer=tracer) as hub:
            with run_scope(RunPolicy()) as ledger:
                result = await run_tool_loop(MESSAGES, hub.view(["ledger.get_purchase_order"]), client, OUTPUT, max_steps=4, tracer=tracer)
        await client.aclose()

    assert result.output == {"po_matches": True, "vendor_id": "V-1001"}
    assert all("tools" not in body and "tool_choice" not in body for body in server.requests)
    assert [body["response_format"]["json_schema"]["name"] for body in server.requests] == ["agent_action", "agent_action"]
    assert ledger.calls == 2 and ledger.input_tokens == 22 and ledger.output_tokens == result.output_tokens
    assert ledger.cost_usd == pytest.approx(22 + 2 * result.output_tokens)
    assert [s.attributes["flotilla.model_alias"] for s in chats(exporter)] == ["checker", "checker"]


async def test_native_tool_calls_go_through_the_guard(lock_file: Path, spans) -> None:
    scripted = ScriptedToolCaller(
        [{"tool_calls": [tool_call("c1", "ledger__get_purchase_order", {"po_number": "PO-7781"})]}, final({"po_matches": True, "vendor_id": "V-1001"})]
    )
    provider, exporter = spans
    tracer = provider.get_tracer("t")
    with serve_app(scripted.app()) as url:
        client = registry(url, tool_calls="native").resolve("checker").client
        async with open_hub({"ledger": ledger_config()}, lock_file=lock_file, tracer=tracer) as hub:
            view = hub.view(["ledger.get_purchase_order"])
            with run_scope(RunPolicy()) as ledger:
                result = await run_tool_loop(MESSAGES, view, client, OUTPUT, max_steps=4, tracer=tracer)
            # A token ceiling no longer turns native calls off: it is enforced on them.
            with run_scope(RunPolicy(max_tokens=10), RunLedger(input_tokens=10)), pytest.raises(BudgetExhausted):
                await run_tool_loop(MESSAGES, view, client, OUTPUT, max_steps=4, tracer=tracer)
        await client.aclose()

    assert result.output == {"po_matches": True, "vendor_id": "V-1001"} and [c.tool for c in result.calls] == ["ledger.get_purchase_order"]
    assert scripted.requests[0]["tool_choice"] == "auto" and len(scripted.requests) == 2  # the budgeted loop sent nothing
    assert (ledger.calls, ledger.input_tokens, ledger.output_tokens) == (2, 40, 10)
    assert ledger.cost_usd == pytest.approx(40 + 20) and ledger.remote_calls == 0
    spans_ = chats(exporter)
    assert [s.attributes["flotilla.model_alias"] for s in spans_[:2]] == ["checker", "checker"]
    assert all(s.attributes["flotilla.model_local"] is True and s.attributes["flotilla.cost_usd"] == 30 for s in spans_[:2])


async def test_confidential_run_refuses_a_remote_native_alias(lock_file: Path) -> None:
    scripted = ScriptedToolCaller([final({"po_matches": True, "vendor_id": "V-1001"})])
    with serve_app(scripted.app()) as url:
        client = registry(url, tool_calls="native", local=False).resolve("checker").client
        async with open_hub({"ledger": ledger_config()}, lock_file=lock_file) as hub:
            with run_scope(RunPolicy(confidential=True)) as ledger, pytest.raises(RemoteModelRefused):
                await run_tool_loop(MESSAGES, hub.view(["ledger.get_purchase_order"]), client, OUTPUT, max_steps=2)
        await client.aclose()
    assert scripted.requests == [] and ledger.refused_calls == 1
