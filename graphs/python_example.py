"""The document-triage workflow written by hand in plain LangGraph, from flotilla's agent nodes.

For authors who prefer Python to YAML: `agent_node` turns any `Agent` into a LangGraph node,
and `RunState` is the state those nodes read and write. Everything else is plain LangGraph —
add your own nodes, edges, interrupts or a different checkpointer.

    graph = build_triage_graph(registry, tracer)
    state = await graph.ainvoke({"input": invoice_text, "outputs": {}, "steps": []})
"""

from __future__ import annotations

from pathlib import Path

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from opentelemetry.trace import Tracer

from flotilla.agents.agent import Agent
from flotilla.agents.document_triage import grounding, rules
from flotilla.agents.document_triage.schemas import Analysis, Decision, Invoice, Note
from flotilla.agents.models.registry import ModelRegistry
from flotilla.agents.output import PydanticOutput
from flotilla.graphs.compile import RunState, agent_node

__all__ = ["build_triage_graph"]

PROMPTS = Path(__file__).resolve().parent.parent / "agents" / "document_triage"


def build_triage_graph(registry: ModelRegistry, tracer: Tracer, checkpointer=None) -> CompiledStateGraph:
    def agent(name: str, output, model: str, **options) -> Agent:
        return Agent(
            name=name,
            role=name,
            instructions=(PROMPTS / f"{name}.md").read_text(encoding="utf-8"),
            output=PydanticOutput(output),
            binding=registry.resolve(model),
            **options,
        )

    steps = [
        agent("extract", Invoice, "specialist-extract", max_tokens=768, policy=grounding.ground_invoice),
        agent("analyze", Analysis, "specialist-analyze", include_input=False, reads=(), context=rules.invoice_checks),
        agent("decide", Decision, "specialist-decide", include_input=False, reads=("analyze",), policy=rules.enforce_decision_policy),
        agent("write", Note, "specialist-write", include_input=False, reads=("extract", "decide")),
    ]
    graph = StateGraph(RunState)
    for step in steps:
        graph.add_node(step.name, agent_node(step, tracer, workflow="document_triage_python"))
    graph.add_edge(START, "extract")
    graph.add_edge("extract", "analyze")
    graph.add_edge("analyze", "decide")
    graph.add_edge("decide", "write")
    graph.add_edge("write", END)
    return graph.compile(checkpointer=checkpointer)
