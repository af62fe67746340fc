"""Per-step orchestration overhead: flotilla's runner vs the same four-node graph in plain
LangGraph, both driving the same instant stub model. Prints the ratio (goal <= 1.3x).

    python bench/bench_orchestration.py [--runs 200]

Both sides do the model call, JSON parse and pydantic validation; flotilla adds its spans,
run records, input checks and the SQLite checkpointer. The plain side is measured with and
without the same checkpointer so the cost of durability is visible on its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import operator
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any, TypedDict

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver  # noqa: E402
from langgraph.graph import END, START, StateGraph  # noqa: E402

from flotilla.agents.document_triage.schemas import Analysis, Decision, Invoice, Note  # noqa: E402
from flotilla.agents.models.base import ChatRequest  # noqa: E402
from flotilla.agents.models.registry import ModelEndpoint, ModelRegistry  # noqa: E402
from flotilla.agents.models.testing import FunctionModel  # noqa: E402
from flotilla.audit.runs import RunStore  # noqa: E402
from flotilla.audit.telemetry import JsonLinesSpanExporter, Telemetry  # noqa: E402
from flotilla.graphs import WorkflowRunner, load_workflow  # noqa: E402

ANSWERS = {
    "Invoice": {"vendor": "Northwind", "invoice_number": "INV-1", "invoice_date": "2026-11-02", "due_date": "2026-12-02",
                "purchase_order": "PO-1", "currency": "GBP",
                "line_items": [{"description": "paper", "quantity": 1, "unit_price": 10.0, "amount": 10.0}],
                "subtotal": 10.0, "tax": 2.0, "total": 12.0},
    "Analysis": {"findings": [{"check": "line_items_sum", "status": "pass", "detail": "ok"}]},
    "Decision": {"decision": "approve", "reasons": ["ok"], "confidence": 0.9},
    "Note": {"subject": "Approved", "body": "Approved."},
}
REPLIES = {name: json.dumps(value) for name, value in ANSWERS.items()}
STEPS = [("extract", Invoice), ("analyze", Analysis), ("decide", Decision), ("write", Note)]
INPUT = (Path(__file__).resolve().parents[1] / "graphs" / "samples" / "invoice.txt").read_text()


def stub() -> FunctionModel:
    return FunctionModel(lambda request: REPLIES[request.schema_name])


class PlainState(TypedDict, total=False):
    input: str
    outputs: Annotated[list[dict[str, Any]], operator.add]


def plain_graph(checkpointer=None):
    model = stub()
    graph = StateGraph(PlainState)

    def node(name: str, schema):
        async def run(state: PlainState) -> dict[str, Any]:
            request = ChatRequest(
                messages=[{"role": "system", "content": name}, {"role": "user", "content": state["input"]}],
                json_schema=schema.model_json_schema(),
                schema_name=schema.__name__,
            )
            reply = await model.complete(request)
            return {"outputs": [schema.model_validate_json(reply.text).model_dump(mode="json")]}

        return run

    previous = START
    for name, schema in STEPS:
        graph.add_node(name, node(name, schema))
        graph.add_edge(previous, name)
        previous = name
    graph.add_edge(previous, END)
    return graph.compile(checkpointer=checkpointer)


async def time_runs(run_once, runs: int) -> float:
    for _ in range(10):  # warm-up
        await run_once()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        await run_once()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


async def main(runs: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="flotilla-bench-"))
    plain = plain_graph()
    plain_s = await time_runs(lambda: plain.ainvoke({"input": INPUT, "outputs": []}), runs)

    async with AsyncSqliteSaver.from_conn_string(str(tmp / "plain-cp.sqlite")) as saver:
        durable = plain_graph(saver)
        counter = iter(range(10**9))
        plain_cp_s = await time_runs(
            lambda: durable.ainvoke({"input": INPUT, "outputs": []}, {"configurable": {"thread_id": str(next(counter))}}), runs
        )

    telemetry = Telemetry([JsonLinesSpanExporter(tmp / "traces.jsonl")])
    model = stub()
    aliases = ("specialist-extract", "specialist-analyze", "specialist-decide", "specialist-write")
    registry = ModelRegistry({a: ModelEndpoint() for a in aliases}, embedded=lambda: model, http_client=None)
    runner = WorkflowRunner(registry=registry, telemetry=telemetry, runs=RunStore(f"sqlite:///{tmp / 'runs.sqlite'}"),
                            checkpoint_path=tmp / "cp.sqlite", max_input_bytes=1_000_000)
    spec = load_workflow("document_triage")
    async with runner:
        flotilla_s = await time_runs(lambda: runner.run(spec, INPUT), runs)
    telemetry.shutdown()

    per_step = lambda s: s / len(STEPS) * 1000  # noqa: E731
    print(f"runs per side: {runs} (median), 4 steps each, instant stub model")
    print(f"plain LangGraph, no checkpointer     {per_step(plain_s):7.3f} ms/step")
    print(f"plain LangGraph, SQLite checkpointer {per_step(plain_cp_s):7.3f} ms/step")
    print(f"flotilla runner (spans, records, ck) {per_step(flotilla_s):7.3f} ms/step")
    print(f"ratio flotilla / plain LangGraph with the same checkpointer: {flotilla_s / plain_cp_s:.2f}x (goal <= 1.3x)")
    print(f"ratio flotilla / plain LangGraph without a checkpointer:    {flotilla_s / plain_s:.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    asyncio.run(main(parser.parse_args().runs))
