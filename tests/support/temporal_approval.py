"""A Python workflow that pauses for a person with LangGraph `interrupt()`: propose → approve → done."""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt

from flotilla.graphs import RunState, WorkflowContext, python_workflow

__all__ = ["approval_workflow"]


def _step(agent: str, output: dict[str, Any]) -> dict[str, Any]:
    return {"outputs": {agent: output}, "steps": [{"agent": agent, "model": None, "ok": True, "latency_ms": 0.0, "input_tokens": 0, "output_tokens": 0, "output": output}]}


async def propose(state: dict[str, Any]) -> dict[str, Any]:
    return _step("propose", {"payee": state["input"].strip(), "amount": 12_500})


async def approve(state: dict[str, Any]) -> dict[str, Any]:
    proposal = state["outputs"]["propose"]
    # graphs/approval.py's request format; an input mentioning "hurry" gets a 1 s timeout.
    timeout = 1 if "hurry" in state["input"] else None
    decision = interrupt({"step": "approve", "why": "amount over 10,000", "shows": proposal, "approvers": ["alice", "bob"], "timeout_s": timeout, "on_timeout": "reject"})
    return _step("approve", {**proposal, **(decision.get("edit") or {}), "decision": decision["action"], "by": decision["approver"]})


@python_workflow(description="Propose a payment and wait for a person to approve it.", output="approve")
def approval_workflow(ctx: WorkflowContext) -> StateGraph:
    graph = StateGraph(RunState)
    graph.add_node("propose", propose)
    graph.add_node("approve", approve)
    graph.add_edge(START, "propose")
    graph.add_edge("propose", "approve")
    graph.add_edge("approve", END)
    return graph
