"""A Python workflow for the tests of `flotilla serve` stopping and starting again: one model step
and a function step, its rail engines off (so each new serve process starts in seconds)."""

from __future__ import annotations

from langgraph.graph import StateGraph

from flotilla.agents.agent import Agent
from flotilla.agents.document_triage.schemas import Decision
from flotilla.agents.output import PydanticOutput
from flotilla.graphs.factory import WorkflowContext, chain_nodes, python_workflow
from tests.support.api_flows import file_decision

RAILS_OFF = {engine: {"enabled": False} for engine in ("presidio", "yara", "injection_classifier", "content_safety", "tool_screen", "llama_guard", "nemo")}


@python_workflow(description="Decide on a document with a model, then file the decision (rails off).", output="file", rails=RAILS_OFF)
def decide_quietly(ctx: WorkflowContext) -> StateGraph:
    decide = Agent(
        name="decide",
        role="Decides.",
        instructions="Decide approve, hold or reject; give reasons as sentences.",
        output=PydanticOutput(Decision),
        binding=ctx.model("specialist-decide"),
    )
    return chain_nodes({"decide": ctx.node(decide), "file": ctx.function_node("file", file_decision)})
