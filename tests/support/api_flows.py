"""Python workflows for the HTTP run API tests, registered by name in a test's flotilla.yaml:

    decide_and_file   a model step (a scripted OpenAI-compatible server answers) and a function step
    held              a step that waits until the test sets HELD_RELEASE (cancel, live events)
    approve_and_file  a decision, then an approval gate (graphs/approval.py), then a filing step
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from langgraph.graph import StateGraph

from flotilla.agents.agent import Agent
from flotilla.agents.document_triage.schemas import Decision
from flotilla.agents.output import PydanticOutput
from flotilla.graphs.factory import WorkflowContext, chain_nodes, python_workflow

HELD_RELEASE = threading.Event()
"""Set it to let runs of `held` finish (the server runs in another thread)."""

GOOD_DECISION = {"decision": "approve", "reasons": ["All checks passed."], "confidence": 0.9}


def file_decision(state: dict[str, Any]) -> dict[str, Any]:
    return {"filed": True, "decision": state["outputs"]["decide"]["decision"]}


@python_workflow(description="Decide on a document with a model, then file the decision.", output="file")
def decide_and_file(ctx: WorkflowContext) -> StateGraph:
    decide = Agent(
        name="decide",
        role="Decides.",
        instructions="Decide approve, hold or reject; give reasons as sentences.",
        output=PydanticOutput(Decision),
        binding=ctx.model("specialist-decide"),
    )
    return chain_nodes({"decide": ctx.node(decide), "file": ctx.function_node("file", file_decision)})


async def wait_for_release(state: dict[str, Any]) -> dict[str, Any]:
    while not HELD_RELEASE.is_set():  # polled: a cancelled run must stop here at once
        await asyncio.sleep(0.02)
    return {"released": True}


def first_step(state: dict[str, Any]) -> dict[str, Any]:
    return {"length": len(state["input"])}


@python_workflow(description="A step, then one that waits until the test releases it.")
def held(ctx: WorkflowContext) -> StateGraph:
    return chain_nodes({"measure": ctx.function_node("measure", first_step), "hold": ctx.function_node("hold", wait_for_release)})


def fixed_decision(state: dict[str, Any]) -> dict[str, Any]:
    return dict(GOOD_DECISION)


@python_workflow(description="Decide, wait for a person's approval, then file the decision.", output="file")
def approve_and_file(ctx: WorkflowContext) -> StateGraph:
    from flotilla.graphs.approval import approval_gate, gate_name
    from flotilla.graphs.approval_spec import ApprovalSpec

    return chain_nodes(
        {
            "decide": ctx.function_node("decide", fixed_decision, Decision),
            gate_name("decide"): approval_gate("decide", ApprovalSpec(), ctx.tracer, workflow=ctx.workflow),
            "file": ctx.function_node("file", file_decision),
        }
    )
