"""The research workflow under test: a scripted OpenAI-compatible server plays the frontier lead
(it records every request), deterministic FunctionModels play the specialists' tool-loop logic,
and the sub-agents reach the real bundled `documents` and `ledger` MCP servers."""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from flotilla.agents.models.base import ChatRequest, ModelBadResponse, ModelClient
from flotilla.agents.models.openai_compat import OpenAICompatibleClient
from flotilla.agents.models.policy import ModelPrice, PriceTable
from flotilla.agents.models.registry import ModelEndpoint, ModelRegistry
from flotilla.agents.models.testing import FunctionModel
from flotilla.audit.runs import RunStore
from flotilla.audit.telemetry import JsonLinesSpanExporter, Telemetry
from flotilla.graphs import WorkflowRunner, load_workflow
from flotilla.graphs.spec import WorkflowSpec
from flotilla.mcp_servers.bundled import bundled_servers
from tests.support.scripted_openai import Reply, ScriptedOpenAI, schema_name
from tests.support.servers import serve_app
from flotilla.tools import open_hub

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PLAN = {
    "sub_questions": [
        {"question": "What does the invoice policy say about a changed IBAN?", "specialist": "documents"},
        {"question": "Is the vendor Northwind active in the vendor master?", "specialist": "ledger"},
        {"question": "Which payments were made to Northwind?", "specialist": "ledger"},
    ]
}
REPORT = {
    "summary": "Northwind is an active vendor; a changed IBAN means the invoice is held.",
    "claims": [
        {"text": "A different IBAN is treated as possible payment fraud.", "citations": ["q1.1"]},
        {"text": "Northwind Office Supplies is active.", "citations": ["q2.1", "q9.9"]},
    ],
    "gaps": [],
    "follow_up": [],
}
PRICES = PriceTable({"frontier": ModelPrice(input_per_mtok=3.0, output_per_mtok=15.0), "specialist-analyze": ModelPrice(input_per_mtok=0.1, output_per_mtok=0.2)})


def frontier_answers(plan: dict[str, Any] = PLAN, report: dict[str, Any] = REPORT):
    """The scripted lead: a plan, a report, and a final answer when a sub-agent is escalated to it."""

    def answer(body: dict[str, Any]) -> Reply:
        name = schema_name(body)
        if name == "Plan":
            return Reply(json.dumps(plan))
        if name == "Report":
            return Reply(json.dumps(report))
        return Reply(json.dumps({"final": {"answer": "Escalated: answered by the frontier model.", "cited_calls": []}}))

    return answer


def _question(request: ChatRequest) -> str:
    user = next(m["content"] for m in request.messages if m["role"] == "user")
    return user.split("INPUT:\n", 1)[-1].split("\n\nFACTS", 1)[0].strip()


def specialist(*, delay_s: float = 0.0, tool_calls: int = 1, fail_on: tuple[str, ...] = (), plan: dict[str, Any] = PLAN, report: dict[str, Any] = REPORT) -> FunctionModel:
    """Tool-loop logic for both specialists: `tool_calls` real lookups, then a final answer citing them.
    It also answers the lead's schemas, as the local model a confidential run falls back to."""

    async def respond(request: ChatRequest) -> str:
        if delay_s:
            await asyncio.sleep(delay_s)
        if request.schema_name == "Plan":
            return json.dumps(plan)
        if request.schema_name == "Report":
            return json.dumps(report)
        question = _question(request)
        if any(word in question for word in fail_on):
            raise ModelBadResponse(f"scripted failure on {question!r}")
        text = "\n".join(m["content"] for m in request.messages)
        done = len(re.findall(r"^TOOL (?:RESULT|ERROR) ", text, flags=re.M))
        documents = "documents.search_documents(" in request.messages[0]["content"]
        calls = (
            [("documents.search_documents", {"query": "IBAN bank account fraud"}), ("documents.read_document", {"name": "ap-invoice-policy.md"})]
            if documents
            else [("ledger.find_vendor", {"name": "Northwind"}), ("ledger.list_payments", {"vendor": "Northwind"})]
        )
        if done < tool_calls and "No more tool calls" not in text:
            tool, arguments = calls[done % len(calls)]
            return json.dumps({"tool": tool, "arguments": arguments})
        return json.dumps({"final": {"answer": f"Answer to: {question}", "cited_calls": list(range(1, done + 1))}})

    return FunctionModel(respond, name="specialist-double")


class ResearchHarness:
    def __init__(self, tmp: Path, model: ModelClient, frontier_url: str | None, *, prices: PriceTable = PRICES) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.trace_file = tmp / "traces.jsonl"
        self.telemetry = Telemetry([JsonLinesSpanExporter(self.trace_file)])
        frontier = (
            ModelEndpoint(provider="openai-compatible", base_url=f"{frontier_url}/v1", model="scripted-frontier", local=False, max_retries=0, timeout_s=30)
            if frontier_url
            else ModelEndpoint()
        )
        self.registry = ModelRegistry(
            {"frontier": frontier, "specialist-analyze": ModelEndpoint()},
            embedded=lambda: model,
            http_client=lambda endpoint, key: OpenAICompatibleClient(
                base_url=endpoint.base_url, model=endpoint.model, local=endpoint.local, max_retries=0, timeout_s=endpoint.timeout_s
            ),
            prices=prices,
        )
        self.hub = open_hub(bundled_servers(), lock_file=tmp / "mcp.lock.json", tracer=self.telemetry.tracer)
        self.runs = RunStore(f"sqlite:///{tmp / 'runs.sqlite'}")
        self.runner = WorkflowRunner(
            registry=self.registry,
            telemetry=self.telemetry,
            runs=self.runs,
            checkpoint_path=tmp / "checkpoints.sqlite",
            max_input_bytes=100_000,
            tools=self.hub,
        )

    def spans(self) -> list[dict[str, Any]]:
        self.telemetry.flush()
        return [json.loads(line) for line in self.trace_file.read_text().splitlines()]


def variant(
    research: dict[str, Any] | None = None, settings: dict[str, Any] | None = None, agents: dict[str, dict[str, Any]] | None = None
) -> WorkflowSpec:
    """The built-in research workflow with some settings changed (validated like a file would be)."""
    spec = load_workflow("research")
    data = spec.model_dump(by_alias=True, exclude={"source", "lines"})
    data["research"].update(research or {})
    data["settings"].update(settings or {})
    for name, changes in (agents or {}).items():
        data["agents"][name].update(changes)
    changed = WorkflowSpec.model_validate(data)
    changed.source = spec.source
    return changed


def span_time(span: dict[str, Any], key: str) -> float:
    return datetime.fromisoformat(span[key].replace("Z", "+00:00")).timestamp()


@pytest.fixture(scope="module")
def frontier() -> Iterator[tuple[ScriptedOpenAI, str]]:
    scripted = ScriptedOpenAI(model="scripted-frontier")
    with serve_app(scripted.app()) as url:
        yield scripted, url


@pytest.fixture
async def research(tmp_path: Path, frontier):
    scripted, url = frontier
    made: list[ResearchHarness] = []

    def make(model: ModelClient | None = None, *, lead=frontier_answers(), remote_lead: bool = True, **options: Any) -> ResearchHarness:
        scripted.requests.clear()
        scripted.script.clear()
        scripted.default = lead
        made.append(ResearchHarness(tmp_path / str(len(made)), model or specialist(), url if remote_lead else None, **options))
        made[-1].frontier = scripted
        return made[-1]

    yield make
    for h in made:
        await h.runner.aclose()
        h.telemetry.shutdown()
