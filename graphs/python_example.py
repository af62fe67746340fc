"""The document-triage workflow written by hand in plain LangGraph: a Python workflow factory.

For authors who prefer Python to YAML. The factory receives a `WorkflowContext` and returns an
uncompiled `StateGraph` over `RunState`; `ctx.node(agent)` turns any `Agent` into a node (its
span, rails on its output, its step record), `ctx.tool_node(...)` calls an MCP tool directly
and `ctx.function_node(...)` runs deterministic Python, as the YAML `tool:` and `function:`
nodes do; `ctx.model(alias)` binds a model alias from flotilla.yaml. Everything else is plain
LangGraph — add your own nodes, edges or state keys.

Register it by name, in flotilla.yaml:

    workflows:
      document_triage_python: flotilla.graphs.python_example:triage

and `flotilla run document_triage_python --input invoice.txt`, `flotilla validate …`, the MCP
gateway and the audit trail treat it like the YAML `document_triage` (same steps, same
outputs): the runner compiles it with its checkpointer (resume works), applies the input and
output rails, and keeps the run.
"""

from __future__ import annotations

from pathlib import Path

from langgraph.graph import StateGraph

from flotilla.agents.agent import Agent
from flotilla.agents.document_triage import labels
from flotilla.agents.document_triage import triage as steps
from flotilla.agents.document_triage.schemas import Analysis, Decision, Invoice, Note
from flotilla.agents.output import PydanticOutput
from flotilla.graphs.factory import WorkflowContext, chain_nodes, python_workflow

__all__ = ["triage"]

PROMPTS = Path(__file__).resolve().parent.parent / "agents" / "document_triage"


@python_workflow(
    description="Triage a supplier invoice (extract, check against the ledger, decide, write a note), built in Python.",
    input="A supplier invoice as plain text.",
    output="write",
)
def triage(ctx: WorkflowContext) -> StateGraph:
    extract = Agent(
        name="extract",
        role="Reads the invoice and extracts its fields.",
        instructions=(PROMPTS / "extract.md").read_text(encoding="utf-8"),
        output=PydanticOutput(Invoice),
        binding=ctx.model("specialist-extract"),
        max_tokens=768,
        timeout_s=120,
        policy=labels.ground_and_read_labels,
    )
    nodes = {
        "extract": ctx.node(extract),
        "vendor": ctx.tool_node("vendor", "ledger.find_vendor", {"name": "{extract.vendor}"}, on_error="continue", timeout_s=30),
        "purchase_order": ctx.tool_node("purchase_order", "ledger.get_purchase_order", {"po_number": "{extract.purchase_order}"}, on_error="continue", timeout_s=30),
        "prior_invoices": ctx.tool_node("prior_invoices", "ledger.find_invoice", {"invoice_number": "{extract.invoice_number}"}, on_error="continue", timeout_s=30),
        "analyze": ctx.function_node("analyze", steps.analyze_invoice, Analysis),
        "decide": ctx.function_node("decide", steps.decide_invoice, Decision),
        "write": ctx.function_node("write", steps.write_note, Note),
    }
    return chain_nodes(nodes)
