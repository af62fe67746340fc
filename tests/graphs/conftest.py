from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flotilla.agents.models.base import ChatRequest, ModelClient, ModelUnavailable
from flotilla.agents.models.registry import ModelEndpoint, ModelRegistry
from flotilla.agents.models.testing import FunctionModel
from flotilla.audit.runs import RunStore
from flotilla.audit.telemetry import JsonLinesSpanExporter, Telemetry
from flotilla.graphs import WorkflowRunner
from tests.support.triage import TRIAGE_ANSWERS

ALIASES = ("specialist-extract", "specialist-analyze", "specialist-decide", "specialist-write")



def canned(answers: dict[str, Any] = TRIAGE_ANSWERS) -> FunctionModel:
    return FunctionModel(lambda request: json.dumps(answers[request.schema_name]))


def down_for(schema_name: str) -> tuple[FunctionModel, dict[str, bool]]:
    """Canned answers, except the endpoint answering `schema_name` is down while `down["yes"]`."""
    down = {"yes": True}

    def respond(request: ChatRequest) -> str:
        if request.schema_name == schema_name and down["yes"]:
            raise ModelUnavailable(f"the {schema_name} endpoint is down")
        return json.dumps(TRIAGE_ANSWERS[request.schema_name])

    return FunctionModel(respond), down


class Harness:
    """A runner wired to a given model client, with its stores in a temp dir."""

    def __init__(self, tmp: Path, model: ModelClient, *, max_input_bytes: int = 100_000, tools=None, rails=None) -> None:
        self.dir = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.trace_file = tmp / "traces.jsonl"
        self.telemetry = Telemetry([JsonLinesSpanExporter(self.trace_file)])
        self.registry = ModelRegistry({a: ModelEndpoint() for a in ALIASES}, embedded=lambda: model, http_client=None)
        self.runs = RunStore(f"sqlite:///{tmp / 'runs.sqlite'}")
        self.runner = WorkflowRunner(
            registry=self.registry,
            telemetry=self.telemetry,
            runs=self.runs,
            checkpoint_path=tmp / "checkpoints.sqlite",
            max_input_bytes=max_input_bytes,
            tools=tools(self.telemetry.tracer) if callable(tools) else tools,
            rails=rails,
        )

    def spans(self) -> list[dict[str, Any]]:
        self.telemetry.flush()
        return [json.loads(line) for line in self.trace_file.read_text().splitlines()]


@pytest.fixture
async def harness(tmp_path: Path):
    made: list[Harness] = []

    def make(model: ModelClient | None = None, **options: Any) -> Harness:
        made.append(Harness(tmp_path / str(len(made)), model or canned(), **options))
        return made[-1]

    yield make
    for h in made:
        await h.runner.aclose()
        h.telemetry.shutdown()
