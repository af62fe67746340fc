"""Function nodes of the approval tests' workflow (tests/graphs/test_approval.py): a decision and
a note computed from the extracted invoice, so a run needs one (test) model call, for extract."""

from __future__ import annotations

from typing import Any

__all__ = ["decide", "write", "approval_workflow"]


def decide(state: dict[str, Any]) -> dict[str, Any]:
    invoice = state["outputs"]["extract"]
    verdict = "approve" if invoice.get("total") is not None else "hold"
    return {"decision": verdict, "reasons": [f"total {invoice.get('total')} read from the invoice"], "confidence": 0.9}


def write(state: dict[str, Any]) -> dict[str, Any]:
    invoice, decision = state["outputs"]["extract"], state["outputs"]["decide"]
    return {"subject": f"Invoice {invoice['invoice_number']}: {decision['decision']}", "body": "; ".join(decision["reasons"])}


def approval_workflow(approval: str = "", settings: str = "") -> str:
    """The workflow's YAML: extract (model) → decide (function, with `approval`) → write (function)."""
    from pathlib import Path

    agents_dir = Path(__file__).resolve().parents[2] / "agents" / "document_triage"
    return f"""
name: approval_flow
agents:
  extract:
    role: Reads the invoice.
    instructions: {agents_dir / "extract.md"}
    output_schema: flotilla.agents.document_triage.schemas:Invoice
    model: specialist-extract
  decide:
    role: Decides by policy.
    function: tests.support.approval_steps:decide
    output_schema: flotilla.agents.document_triage.schemas:Decision
{approval}
  write:
    role: Writes the note.
    function: tests.support.approval_steps:write
    output_schema: flotilla.agents.document_triage.schemas:Note
edges:
  - {{from: extract, to: decide}}
  - {{from: decide, to: write}}
settings:
  sensitivity: internal
{settings}
"""


def review_flow(ctx: Any):
    """A Python workflow whose one step flags the run for review (for `settings.approval_on_review`)."""
    import time

    from langgraph.graph import END, START, StateGraph

    from flotilla.graphs.compile import RunState
    from flotilla.graphs.tool_node import step_record

    def check(state: dict[str, Any]) -> dict[str, Any]:
        output = {"total": 1200.0, "note": "the total is smudged"}
        record = step_record("check", "function", "function tests.support.approval_steps:review_flow", time.perf_counter(), output, [])
        return {"outputs": {"check": output}, "steps": [record], "review": [{"step": "check", "reason": "the total is unclear"}]}

    graph = StateGraph(RunState)
    graph.add_node("check", check)
    graph.add_edge(START, "check")
    graph.add_edge("check", END)
    return graph
