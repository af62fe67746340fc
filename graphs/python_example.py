"""The document-triage workflow written by hand in plain LangGraph: a Python workflow factory.

For authors who prefer Python to YAML. The factory receives a `WorkflowContext` and returns an
uncompiled `StateGraph` over `RunState`; `ctx.node(agent)` turns any `Agent` into a node (its
span, rails on its output, its step record) and `ctx.model(alias)` binds a model alias from
flotilla.yaml. Everything else is plain LangGraph — add your own nodes, edges or state keys.

Register it by name, in flotilla.yaml:

    workflows:
      document_triage_python: flotilla.graphs.python_example:triage

and `flotilla run document_triage_python --input invoice.txt`, `flotilla validate …`, the MCP
gateway and the audit trail treat it like the YAML `document_triage`: the runner compiles it
with its checkpointer (resume works), applies the input and output rails, and keeps the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langgraph.graph import END, START, StateGraph

from flotilla.agents.agent import Agent
from flotilla.agents.document_triage import grounding, rules
from flotilla.agents.document_triage.schemas import Analysis, Decision, Invoice, Note
from flotilla.agents.output import PydanticOutput
from flotilla.graphs.compile import RunState
from flotilla.graphs.factory import WorkflowContext, python_workflow

__all__ = ["triage"]

PROMPTS = Path(__file__).resolve().parent.parent / "agents" / "document_triage"


@python_workflow(
    description="Triage a supplier invoice (extract, check, decide, write a note), built in Python.",
    input="A supplier invoice as plain text.",
    output="write",
)
def triage(ctx: WorkflowContext) -> StateGraph:
    def agent(name: str, output: type, model: str, **options: Any) -> Agent:
        return Agent(
            name=name,
            role=name,
            instructions=(PROMPTS / f"{name}.md").read_text(encoding="utf-8"),
            output=PydanticOutput(output),
            binding=ctx.model(model),
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
        graph.add_node(step.name, ctx.node(step))
    graph.add_edge(START, "extract")
    graph.add_edge("extract", "analyze")
    graph.add_edge("analyze", "decide")
    graph.add_edge("decide", "write")
    graph.add_edge("write", END)
    return graph
