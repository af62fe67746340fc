"""The guard applies to every workflow, not only research: a confidential document-triage run
whose extract specialist is remote never sends it a request."""

from __future__ import annotations

import json
from pathlib import Path

from flotilla.agents.models.openai_compat import OpenAICompatibleClient
from flotilla.agents.models.policy import PriceTable
from flotilla.agents.models.registry import ModelEndpoint, ModelRegistry
from flotilla.agents.models.testing import FunctionModel
from flotilla.audit.runs import RunStore
from flotilla.audit.telemetry import JsonLinesSpanExporter, Telemetry
from flotilla.graphs import WorkflowRunner, load_workflow
from tests.support.scripted_openai import Reply
from tests.support.triage import TRIAGE_ANSWERS
from tests.support.triage import FOUR_AGENT_TRIAGE

INVOICE = (Path(__file__).resolve().parents[2] / "graphs" / "samples" / "invoice.txt").read_text()


async def test_a_confidential_triage_run_refuses_its_remote_specialist(tmp_path: Path, frontier) -> None:
    scripted, url = frontier
    scripted.requests.clear()
    scripted.default = lambda body: Reply(json.dumps(TRIAGE_ANSWERS["Invoice"]))
    remote = ModelEndpoint(provider="openai-compatible", base_url=f"{url}/v1", model="remote-extract", local=False, max_retries=0)
    local = FunctionModel(lambda request: json.dumps(TRIAGE_ANSWERS[request.schema_name]))
    registry = ModelRegistry(
        {"specialist-extract": remote, **{a: ModelEndpoint() for a in ("specialist-analyze", "specialist-decide", "specialist-write")}},
        embedded=lambda: local,
        http_client=lambda e, key: OpenAICompatibleClient(base_url=e.base_url, model=e.model, local=e.local, max_retries=0),
        prices=PriceTable(),
    )
    telemetry = Telemetry([JsonLinesSpanExporter(tmp_path / "traces.jsonl")])
    runner = WorkflowRunner(
        registry=registry, telemetry=telemetry, runs=RunStore(f"sqlite:///{tmp_path / 'runs.sqlite'}"),
        checkpoint_path=tmp_path / "checkpoints.sqlite", max_input_bytes=100_000,
    )
    try:
        refused = await runner.run(load_workflow(FOUR_AGENT_TRIAGE), INVOICE, confidential=True)
        assert refused.status == "failed" and refused.error["code"] == "remote_model_refused"
        assert scripted.requests == []
        allowed = await runner.run(load_workflow(FOUR_AGENT_TRIAGE), INVOICE)
        assert allowed.status == "succeeded", allowed.error
        assert len(scripted.requests) == 1
    finally:
        await runner.aclose()
        telemetry.shutdown()
    spans = [json.loads(line) for line in (tmp_path / "traces.jsonl").read_text().splitlines()]
    chats = [s for s in spans if s["name"].startswith("chat ")]
    refused_span, *ran = chats  # the refused call never reached a model: no locality, a refusal event
    assert "flotilla.model_local" not in refused_span["attributes"]
    assert [e["name"] for e in refused_span["events"]] == ["flotilla.policy.refused"]
    assert [s["attributes"]["flotilla.model_local"] for s in ran] == [False, True, True, True]
    runs = [s["attributes"] for s in spans if s["name"].startswith("invoke_workflow")]
    assert [r["flotilla.run.remote_calls"] for r in runs] == [0, 1]
