from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agents.models.base import ModelClient
from agents.models.registry import ModelEndpoint, ModelRegistry
from agents.models.testing import FunctionModel
from audit.runs import RunStore
from audit.telemetry import JsonLinesSpanExporter, Telemetry
from graphs import WorkflowRunner

ALIASES = ("specialist-extract", "specialist-analyze", "specialist-decide", "specialist-write")

TRIAGE_ANSWERS: dict[str, Any] = {
    "Invoice": {
        "vendor": "Northwind Office Supplies Ltd.",
        "invoice_number": "INV-2026-0412",
        "invoice_date": "2026-11-02",
        "due_date": "2026-12-02",
        "purchase_order": "PO-7781",
        "currency": "GBP",
        "line_items": [
            {"description": "A4 copier paper", "quantity": 40, "unit_price": 24.5, "amount": 980.0},
            {"description": "Toner cartridge", "quantity": 12, "unit_price": 61.0, "amount": 732.0},
            {"description": "Office chair", "quantity": 3, "unit_price": 189.0, "amount": 567.0},
        ],
        "subtotal": 2279.0,
        "tax": 455.8,
        "total": 2734.8,
    },
    "Analysis": {"findings": [{"check": "line_items_sum", "status": "pass", "detail": "sums match"}]},
    "Decision": {"decision": "approve", "reasons": ["all checks passed"], "confidence": 0.9},
    "Note": {"subject": "Invoice INV-2026-0412 approved", "body": "Your invoice was approved."},
}


def canned(answers: dict[str, Any] = TRIAGE_ANSWERS) -> FunctionModel:
    return FunctionModel(lambda request: json.dumps(answers[request.schema_name]))


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
