"""A one-agent workflow with model tiers and checks, and a runner whose aliases each have
their own model: FunctionModels (deterministic, in-process) or a real OpenAI-compatible HTTP
client (for a remote tier that must record every request it gets)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from flotilla.agents.models.base import ModelClient
from flotilla.agents.models.openai_compat import OpenAICompatibleClient
from flotilla.agents.models.registry import ModelEndpoint, ModelRegistry
from flotilla.agents.models.testing import FunctionModel
from flotilla.audit.runs import RunStore
from flotilla.audit.telemetry import JsonLinesSpanExporter, Telemetry
from flotilla.graphs import WorkflowRunner, load_workflow

DECISION = "flotilla.agents.document_triage.schemas:Decision"
GOOD = {"decision": "hold", "reasons": ["The purchase order number is missing from the invoice."], "confidence": 0.9}
FIE = "fie_de_fie_de_fie_de_fie_de_fie_de_fie_de_fie_de_fie_de_fie_de_fie_de_fie_de_fie"  # SmolLM2, real
DEGENERATE = {"decision": "reject", "reasons": [FIE], "confidence": 1.0}


def model(answer: dict[str, Any] | str, name: str, *, local: bool = True) -> FunctionModel:
    """A tier that always gives `answer` (a dict as JSON, a string verbatim)."""
    text = answer if isinstance(answer, str) else json.dumps(answer)
    return FunctionModel(lambda request: text, name=name, local=local)


def write_workflow(tmp: Path, *, model: str | list[str], verify: list[dict[str, Any]] | None = None, **agent: Any) -> Path:
    (tmp / "decide.md").write_text("Decide approve, hold or reject; give reasons as sentences.\n")
    spec = {
        "name": "tiered",
        "agents": {"decide": {"role": "Decides.", "instructions": "decide.md", "output_schema": DECISION, "model": model, **agent}},
        "edges": [],
    }
    if verify is not None:
        spec["agents"]["decide"]["verify"] = verify
    path = tmp / "tiered.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


class TierHarness:
    """A runner over `clients` (alias → ModelClient, or alias → URL of an OpenAI-compatible server)."""

    def __init__(
        self, tmp: Path, clients: dict[str, ModelClient | str], *, remote: tuple[str, ...] = (), telemetry: Telemetry | None = None, runs: RunStore | None = None
    ) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.trace_file = tmp / "traces.jsonl"
        self.telemetry = telemetry or Telemetry([JsonLinesSpanExporter(self.trace_file)])
        endpoints = {
            alias: ModelEndpoint(provider="openai-compatible", base_url=c if isinstance(c, str) else "http://in-process", model=alias, local=alias not in remote, max_retries=0)
            for alias, c in clients.items()
        }

        def http_client(endpoint: ModelEndpoint, key: str | None) -> ModelClient:
            client = clients[endpoint.model]  # type: ignore[index]
            if isinstance(client, str):
                return OpenAICompatibleClient(base_url=client, model=endpoint.model, local=endpoint.local, max_retries=0)
            return client

        self.registry = ModelRegistry(endpoints, embedded=lambda: None, http_client=http_client)  # type: ignore[arg-type,return-value]
        self.runs = runs or RunStore(f"sqlite:///{tmp / 'runs.sqlite'}")
        self.runner = WorkflowRunner(registry=self.registry, telemetry=self.telemetry, runs=self.runs, checkpoint_path=tmp / "cp.sqlite", max_input_bytes=100_000)

    async def run(self, workflow: Path, text: str = "Invoice INV-1 from Acme Ltd, total 12.50 GBP.", **options: Any):
        return await self.runner.run(load_workflow(str(workflow)), text, **options)

    def spans(self) -> list[dict[str, Any]]:
        self.telemetry.flush()
        return [json.loads(line) for line in self.trace_file.read_text().splitlines()]

    async def aclose(self) -> None:
        await self.runner.aclose()
        self.telemetry.shutdown()
