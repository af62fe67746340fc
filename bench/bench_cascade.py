"""Cascade: how much of the frontier's quality a [specialist, frontier] cascade keeps, at what
share of its cost — the RouteLLM framing — on a labelled set of invoices.

    python bench/bench_cascade.py [--n 50] [--seed 11]

Each invoice (bench/invoice_set.py) runs through the real runner as a one-agent extract
workflow with the checks a workflow author would declare (grounding, dates in order, totals
adding up; plus the built-in degenerate-text check), in three configurations:

    specialist only   model: specialist, no checks (what a pipeline without verification ships)
    frontier only     model: frontier
    cascade           model: [specialist, frontier], checks on

The frontier is scripted to be right. The specialist is scripted to be sometimes wrong the way
the embedded 135M model is (seeded): total read as subtotal, due date as invoice date, a
degenerate vendor, an invented invoice number, a line amount misread — and, undetectably, a
dropped purchase order. Cost is priced per token from the price table below (the `prices:`
table of flotilla.yaml) and read from the chat spans, as `flotilla audit` would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import yaml  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

from flotilla.agents.models.policy import ModelPrice, PriceTable  # noqa: E402
from flotilla.agents.models.registry import ModelEndpoint, ModelRegistry  # noqa: E402
from flotilla.agents.models.testing import FunctionModel  # noqa: E402
from flotilla.audit.runs import RunStore  # noqa: E402
from flotilla.audit.telemetry import Telemetry  # noqa: E402
from flotilla.graphs import WorkflowRunner, load_workflow  # noqa: E402
from invoice_set import FIELDS, LabelledInvoice, invoices  # noqa: E402

PRICES = PriceTable({
    "specialist": ModelPrice(input_per_mtok=0.05, output_per_mtok=0.10),  # self-hosted vLLM, amortised
    "frontier": ModelPrice(input_per_mtok=3.00, output_per_mtok=15.00),
})
CHECKS = [
    {"grounded": ["vendor", "invoice_number", "purchase_order", "invoice_date", "due_date", "currency", "subtotal", "tax", "total", "line_items.description", "line_items.amount"]},
    {"name": "dates_in_order", "expr": "invoice_date == None or due_date == None or invoice_date < due_date", "message": "the invoice date is not before the due date"},
    {"name": "totals_add_up", "expr": "subtotal == None or tax == None or total == None or approx(subtotal + tax, total)", "message": "subtotal + tax is not the total"},
    {"name": "lines_add_up", "expr": "len(line_items) == 0 or subtotal == None or approx(sum(line_items.amount), subtotal)", "message": "the line items do not add up to the subtotal"},
]
MISTAKES = ("total_as_subtotal", "due_as_invoice_date", "degenerate_vendor", "invented_number", "line_amount_misread", "dropped_po")


def specialist_answer(doc: LabelledInvoice, mistake: str | None) -> dict[str, Any]:
    answer = json.loads(json.dumps(doc.expected))
    if mistake == "total_as_subtotal":
        answer["subtotal"] = answer["total"]
    elif mistake == "due_as_invoice_date":
        answer["invoice_date"] = answer["due_date"]
    elif mistake == "degenerate_vendor":
        answer["vendor"] = "fields_coup_de_ca_de_fie_de_fie_de_fie_de_fie"
    elif mistake == "invented_number":
        answer["invoice_number"] = answer["invoice_number"][:-2] + "99"
    elif mistake == "line_amount_misread":
        answer["line_items"][0]["amount"] = answer["line_items"][0]["unit_price"]
    elif mistake == "dropped_po":
        answer["purchase_order"] = None
    return answer


def field_accuracy(output: dict[str, Any] | None, expected: dict[str, Any]) -> float:
    if not output:
        return 0.0
    return sum(output.get(f) == expected[f] for f in FIELDS) / len(FIELDS)


def workflow(tmp: Path, name: str, model: str | list[str], checks: bool) -> Path:
    (tmp / "extract.md").write_text("Extract the invoice's fields as JSON; null where the text has nothing.\n")
    agent: dict[str, Any] = {"role": "Extracts.", "instructions": "extract.md", "output_schema": "flotilla.agents.document_triage.schemas:Invoice", "model": model}
    agent["verify"] = CHECKS if checks else [{"degenerate": False}]
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "agents": {"extract": agent}, "edges": [], "settings": {"sensitivity": "internal"}}, sort_keys=False))
    return path


async def run_config(tmp: Path, name: str, model: str | list[str], checks: bool, docs: list[LabelledInvoice], mistakes: list[str | None]) -> dict[str, Any]:
    by_text = {doc.text: (doc, mistake) for doc, mistake in zip(docs, mistakes)}

    def document(request) -> tuple[LabelledInvoice, str | None]:
        user = request.messages[1]["content"]
        return by_text[next(text for text in by_text if text in user)]

    specialist = FunctionModel(lambda r: json.dumps(specialist_answer(*document(r))), name="specialist-model")
    frontier = FunctionModel(lambda r: json.dumps(document(r)[0].expected), name="frontier-model", local=False)
    clients = {"specialist": specialist, "frontier": frontier}
    endpoints = {a: ModelEndpoint(provider="openai-compatible", base_url="http://in-process", model=a, local=a != "frontier") for a in clients}
    registry = ModelRegistry(endpoints, embedded=lambda: None, http_client=lambda e, k: clients[e.model], prices=PRICES)  # type: ignore[arg-type,return-value]
    spans = InMemorySpanExporter()
    telemetry = Telemetry([spans])
    work = tmp / name
    work.mkdir()
    runner = WorkflowRunner(registry=registry, telemetry=telemetry, runs=RunStore(f"sqlite:///{work / 'runs.sqlite'}"), checkpoint_path=work / "cp.sqlite", max_input_bytes=100_000)
    spec = load_workflow(str(workflow(work, name, model, checks)))
    accuracy, first_tier, review = [], 0, 0
    try:
        for doc in docs:
            result = await runner.run(spec, doc.text)
            accuracy.append(field_accuracy(result.output if result.status == "succeeded" else None, doc.expected))
            review += result.status == "needs_review"
            first_tier += result.status == "succeeded" and result.steps[0].get("tier") == (model if isinstance(model, str) else model[0])
    finally:
        await runner.aclose()
        telemetry.flush()
    cost = sum(s.attributes.get("flotilla.cost_usd", 0.0) for s in spans.get_finished_spans() if s.name.startswith("chat "))
    telemetry.shutdown()
    return {"accuracy": sum(accuracy) / len(docs), "documents_right": sum(a == 1.0 for a in accuracy) / len(docs), "first_tier": first_tier / len(docs), "needs_review": review, "cost": cost,
            "calls": (len(specialist.requests), len(frontier.requests))}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--error-rate", type=float, default=0.4, help="share of documents the specialist gets wrong")
    args = parser.parse_args()
    docs = invoices(args.n, seed=args.seed)
    rng = random.Random(args.seed)
    mistakes = [rng.choice(MISTAKES) if rng.random() < args.error_rate else None for _ in docs]
    with tempfile.TemporaryDirectory() as tmp:
        results = {
            "specialist only": await run_config(Path(tmp), "specialist_only", "specialist", False, docs, mistakes),
            "frontier only": await run_config(Path(tmp), "frontier_only", "frontier", True, docs, mistakes),
            "cascade": await run_config(Path(tmp), "cascade", ["specialist", "frontier"], True, docs, mistakes),
        }
    wrong = sum(m is not None for m in mistakes)
    print(f"{len(docs)} labelled invoices; the specialist is wrong on {wrong} ({', '.join(f'{m} {mistakes.count(m)}' for m in MISTAKES)})")
    print(f"{'configuration':<17} {'field accuracy':>14} {'docs right':>10} {'1st tier':>9} {'review':>7} {'calls s/f':>10} {'cost USD':>10}")
    for name, r in results.items():
        print(f"{name:<17} {r['accuracy']:>14.1%} {r['documents_right']:>10.0%} {r['first_tier']:>9.0%} {r['needs_review']:>7} {r['calls'][0]:>4}/{r['calls'][1]:<5} {r['cost']:>10.6f}")
    frontier, cascade, specialist = results["frontier only"], results["cascade"], results["specialist only"]
    print(
        f"cascade: {cascade['first_tier']:.0%} answered by the specialist; {cascade['cost'] / frontier['cost']:.1%} of frontier cost "
        f"for {cascade['accuracy'] / frontier['accuracy']:.1%} of frontier quality "
        f"(specialist alone: {specialist['accuracy'] / frontier['accuracy']:.1%} of the quality, {specialist['documents_right']:.0%} of documents right, "
        f"{specialist['cost'] / frontier['cost']:.1%} of the cost)"
    )


if __name__ == "__main__":
    asyncio.run(main())
