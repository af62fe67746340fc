"""The shipped extract adapter gives the same greedy answer on the embedded engine (merged into
fp32 weights) as on real vLLM-CPU (loaded unchanged with its LoRA runtime endpoint)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest

from flotilla.agents.models.base import ChatRequest
from flotilla.agents.models.openai_compat import OpenAICompatibleClient
from flotilla.graphs import load_workflow
from flotilla.graphs.distill import prompt_agent
from flotilla.runtime.settings import load_settings

pytestmark = pytest.mark.model
SHIPPED = Path(str(resources.files("flotilla.agents.document_triage").joinpath("adapters/extract")))
SAMPLE = (Path(__file__).resolve().parents[2] / "graphs" / "samples" / "invoice.txt").read_text()


@pytest.mark.skipif(not (SHIPPED / "adapter_config.json").is_file(), reason="no shipped extract adapter in this tree")
async def test_same_greedy_answer_on_embedded_and_vllm(vllm) -> None:
    from flotilla.agents.models.embedded import EmbeddedEngine

    agent = prompt_agent(load_workflow("document_triage"), "extract")
    messages = agent.messages({"input": SAMPLE, "outputs": {}})
    vllm.load_adapter("extract", SHIPPED)
    client = OpenAICompatibleClient(base_url=vllm.base_url, model="extract", timeout_s=600, max_retries=0)
    try:
        served = await client.complete(ChatRequest(messages=messages, json_schema=agent.json_schema, schema_name="Invoice", max_tokens=agent.max_tokens))
    finally:
        await client.aclose()
    engine = EmbeddedEngine(load_settings().cache_dir, precision="fp32", adapter=SHIPPED)  # vLLM-CPU runs fp32 too
    try:
        local = engine.generate(messages, json_schema=agent.json_schema, max_tokens=agent.max_tokens)
    finally:
        engine.close()
    assert served.model == "extract"
    assert json.loads(local.text) == json.loads(served.text)
