"""flotilla's production model path against real vLLM (the CPU build, serving the same SmolLM2
checkpoint the embedded engine uses): structured outputs, the tool loop's default protocol, the
document workflow end to end with every specialist alias on vLLM, token accounting against
vLLM's own counters, LoRA adapters loaded at run time — and vLLM makes no network attempt."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import jsonschema
import pytest

from flotilla.agents.document_triage.schemas import Decision, Invoice
from flotilla.agents.models.base import ChatRequest
from flotilla.agents.models.openai_compat import OpenAICompatibleClient
from flotilla.agents.models.policy import RunPolicy, run_scope
from flotilla.agents.models.registry import ModelEndpoint, ModelRegistry
from flotilla.agents.tool_loop import action_schema, run_tool_loop
from flotilla.graphs import load_workflow
from flotilla.runtime.settings import load_settings
from flotilla.runtime.wiring import _http_client, build_runtime
from flotilla.tools import open_hub
from tests.mcp.helpers import ledger_config
from tests.support.triage import FOUR_AGENT_TRIAGE
from tests.support.vllm import VLLMServer, model_dir, random_adapter

ALIASES = ("specialist-extract", "specialist-analyze", "specialist-decide", "specialist-write")
INVOICE = (Path(__file__).resolve().parents[1] / "graphs" / "samples" / "invoice.txt").read_text()
EXTRACT = [
    {"role": "system", "content": "Extract the invoice's fields as JSON."},
    {"role": "user", "content": INVOICE},
]


def client_for(server: VLLMServer, model: str | None = None) -> OpenAICompatibleClient:
    return OpenAICompatibleClient(base_url=server.base_url, model=model or server.model, timeout_s=300, max_retries=0)


def settled_counters(server: VLLMServer, expected: dict[str, float]) -> dict[str, float]:
    """vLLM's token counters, read again briefly if they lag the last response (they are
    updated by its engine loop, not inside the request)."""
    counters = server.token_counters()
    for _ in range(20):
        if counters == expected:
            break
        time.sleep(0.25)
        counters = server.token_counters()
    return counters


def test_vllm_listens_on_loopback_only_and_makes_no_network_attempt(vllm: VLLMServer) -> None:
    listening = _listening_addresses(vllm.port)
    assert listening == {"127.0.0.1"}, listening
    assert vllm.models()[0] == vllm.model  # the base model; adapters other tests loaded follow it
    assert vllm.network_attempts() == []


async def test_structured_outputs_are_schema_valid(vllm: VLLMServer) -> None:
    client = client_for(vllm)
    try:
        for schema, name, messages in [
            (Invoice.model_json_schema(), "Invoice", EXTRACT),
            (Decision.model_json_schema(), "Decision", [{"role": "user", "content": "Approve, hold or reject an invoice whose checks all passed?"}]),
        ]:
            reply = await client.complete(ChatRequest(messages=messages, json_schema=schema, schema_name=name, max_tokens=768))
            jsonschema.validate(json.loads(reply.text), schema)
            assert reply.provider == "openai-compatible" and reply.model == vllm.model and reply.local
            assert reply.input_tokens > 0 and reply.output_tokens > 0
    finally:
        await client.aclose()


async def test_tool_loop_default_protocol_runs_on_stock_vllm_and_is_accounted(vllm: VLLMServer, tmp_path: Path) -> None:
    """The alias default (`tool_calls: json`) works on a server started without a tool parser, and
    each turn's tokens reach the run's ledger exactly as vLLM counted them."""
    endpoint = ModelEndpoint(provider="openai-compatible", base_url=vllm.base_url, model=vllm.model, timeout_s=300, max_retries=0)
    client = ModelRegistry({"checker": endpoint}, embedded=lambda: None, http_client=_http_client).resolve("checker").client
    output = {"type": "object", "properties": {"vendor_id": {"type": "string", "maxLength": 20}}, "required": ["vendor_id"], "additionalProperties": False}
    messages = [
        {"role": "system", "content": "Find the vendor id of the invoice's vendor in the ledger."},
        {"role": "user", "content": "Invoice from Northwind Office Supplies Ltd."},
    ]
    before = vllm.token_counters()
    async with open_hub({"ledger": ledger_config()}, lock_file=tmp_path / "mcp.lock.json") as hub:
        view = hub.view(["ledger.find_vendor"])
        jsonschema.Draft202012Validator.check_schema(action_schema(await view.tools(), output))
        with run_scope(RunPolicy()) as ledger:
            result = await run_tool_loop(messages, view, client, output, max_steps=3, max_tokens=256)
    await client.aclose()
    jsonschema.validate(result.output, output)
    assert ledger.calls == result.steps == len(result.model_results)
    expected = {"prompt_tokens": before["prompt_tokens"] + ledger.input_tokens, "generation_tokens": before["generation_tokens"] + ledger.output_tokens}
    assert settled_counters(vllm, expected) == expected


def test_document_workflow_end_to_end_on_vllm(vllm: VLLMServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every specialist alias on vLLM through the real runtime; the run's ledger (on its workflow
    span) holds exactly the tokens vLLM counted."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FLOTILLA_DATA_DIR", str(tmp_path / "data"))
    lines = ["models:"]
    for alias in ALIASES:
        lines += [f"  {alias}:", "    provider: openai-compatible", f"    base_url: {vllm.base_url}", f"    model: {vllm.model}", "    timeout_s: 300", "    max_retries: 0"]
    (tmp_path / "flotilla.yaml").write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("FLOTILLA_CONFIG", str(tmp_path / "flotilla.yaml"))
    settings = load_settings()
    assert {settings.models[a].base_url for a in ALIASES} == {vllm.base_url}

    before = vllm.token_counters()
    runtime = build_runtime(settings)

    async def go():
        async with runtime.runner as runner:
            return await runner.run(load_workflow(FOUR_AGENT_TRIAGE), INVOICE, initiator="cli:test")

    try:
        result = asyncio.run(go())
    finally:
        runtime.close()
    # The stock 135M model is weak: a run may end in needs_review, never in an error of the path.
    assert result.status in ("succeeded", "needs_review"), result.error
    spans = [json.loads(line) for line in (tmp_path / "data" / "traces.jsonl").read_text().splitlines()]
    chats = [s for s in spans if s["name"].startswith("chat ")]
    assert chats and {s["attributes"]["gen_ai.request.model"] for s in chats} == {vllm.model}
    called = {s["attributes"]["flotilla.model_alias"] for s in chats}
    # A step vLLM's answer did not pass ends the run for review before the later aliases are asked.
    assert "specialist-extract" in called and called <= set(ALIASES)
    assert result.status == "needs_review" or called == set(ALIASES)
    assert result.steps[0]["ok"] and result.steps[0]["model"] == vllm.model  # the extract step answered on vLLM
    assert all(s["attributes"]["flotilla.model_local"] for s in chats)
    [workflow] = [s for s in spans if s["name"].startswith("invoke_workflow")]
    run_in, run_out = workflow["attributes"]["flotilla.run.input_tokens"], workflow["attributes"]["flotilla.run.output_tokens"]
    assert run_in == sum(s["attributes"]["gen_ai.usage.input_tokens"] for s in chats)
    assert run_out == sum(s["attributes"]["gen_ai.usage.output_tokens"] for s in chats)
    expected = {"prompt_tokens": before["prompt_tokens"] + run_in, "generation_tokens": before["generation_tokens"] + run_out}
    assert settled_counters(vllm, expected) == expected
    assert vllm.network_attempts() == []


async def test_lora_adapters_load_at_run_time_and_are_served_by_name(vllm: VLLMServer, tmp_path_factory: pytest.TempPathFactory) -> None:
    from flotilla.runtime.settings import load_settings as settings

    base = model_dir(settings().cache_dir)
    adapter = random_adapter(base, tmp_path_factory.mktemp("adapters") / "extract-random", seed=1)
    vllm.load_adapter("extract-random", adapter)
    vllm.load_adapter("extract-random", adapter)  # again: a no-op, not an error
    assert "extract-random" in vllm.models()
    request = ChatRequest(messages=EXTRACT, json_schema=Invoice.model_json_schema(), schema_name="Invoice", max_tokens=96)
    base_client, adapted_client = client_for(vllm), client_for(vllm, "extract-random")
    try:
        plain, adapted = await base_client.complete(request), await adapted_client.complete(request)
    finally:
        await base_client.aclose()
        await adapted_client.aclose()
    assert adapted.model == "extract-random"
    assert adapted.text != plain.text  # the adapter's weights took part


def _listening_addresses(port: int) -> set[str]:
    """The local addresses of the TCP sockets listening on `port` (from /proc/net/tcp{,6})."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if int(hex_port, 16) == port and fields[3] == "0A":  # 0A: LISTEN
                if len(address) == 8:
                    found.add(".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0)))
                else:
                    found.add(f"ipv6:{address}")
    return found
