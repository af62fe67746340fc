"""WorkflowSpec + agents → a LangGraph StateGraph whose nodes are agent steps.

The state is small and checkpointable: the input text, each agent's output, and the step
records in order. Every node runs inside an `invoke_agent` span.
"""

from __future__ import annotations

import json
import operator
from typing import TYPE_CHECKING, Annotated, Any, Protocol, TypedDict

from langgraph.graph import END as LG_END
from langgraph.graph import START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Checkpointer
from opentelemetry.trace import Status, StatusCode, Tracer

from flotilla.agents.agent import Agent, NeedsReview
from flotilla.graphs.spec import END, WorkflowSpec
from flotilla.guardrails.base import RailPoint

if TYPE_CHECKING:
    from flotilla.tools import ToolHub

__all__ = ["RunState", "RailsHook", "agent_node", "compile_workflow", "StepFailed"]


def _merge(left: dict[str, Any] | None, right: dict[str, Any] | None) -> dict[str, Any]:
    return {**(left or {}), **(right or {})}


class RunState(TypedDict, total=False):
    input: str
    outputs: Annotated[dict[str, Any], _merge]
    steps: Annotated[list[dict[str, Any]], operator.add]
    confidential: bool
    """The run's confidential flag, checkpointed so `resume` keeps it."""
    review: Annotated[list[dict[str, str]], operator.add]
    """`{"step", "reason"}` items a node adds when a person must look at the run: any makes the
    run `needs_review` instead of `succeeded` (graphs/status.py)."""


class RailsHook(Protocol):
    """What the graph needs from guardrails (`guardrails.Guardrails` is one): take a workflow's
    `rails:` section, and check a text at a point, getting it back (maybe redacted) or a
    GuardrailViolation."""

    def configure_workflow(self, workflow: str, overrides: dict[str, Any] | None) -> Any: ...

    async def check(self, point: RailPoint, text: str, *, workflow: str | None = None, agent: str | None = None) -> str: ...


class StepFailed(Exception):
    """Internal carrier: which agent failed and the step record to keep. Never leaves graphs/."""

    def __init__(self, agent: str, record: dict[str, Any], cause: BaseException) -> None:
        super().__init__(str(cause))
        self.agent, self.record, self.cause = agent, record, cause


def agent_node(agent: Agent, tracer: Tracer, *, workflow: str, rails: RailsHook | None = None):
    """A LangGraph node running one agent step. Usable directly in a hand-written StateGraph."""

    async def node(state: RunState) -> dict[str, Any]:
        with tracer.start_as_current_span(f"invoke_agent {agent.name}", record_exception=False, set_status_on_exception=False) as span:
            span.set_attributes(
                {
                    "gen_ai.operation.name": "invoke_agent",
                    "gen_ai.agent.name": agent.name,
                    "gen_ai.agent.description": agent.role,
                    "gen_ai.agent.version": agent.version,
                    **agent.model_attributes(),
                    "flotilla.workflow": workflow,
                    "flotilla.model_alias": agent.binding.alias,
                }
            )
            base = {"agent": agent.name, "model": agent.binding.client.name, "alias": agent.binding.alias, "fallback": agent.binding.fallback}
            try:
                result = await agent.run(dict(state), tracer, rails=rails, workflow=workflow)
                output = result.output
                if rails is not None:
                    checked = await rails.check(RailPoint.AGENT_OUTPUT, json.dumps(output, ensure_ascii=False), workflow=workflow, agent=agent.name)
                    output = json.loads(checked)
            except Exception as exc:
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                span.set_attribute("error.type", type(exc).__name__)
                exc = _review_uncertain_call(agent.name, exc)
                error = exc.to_dict() if hasattr(exc, "to_dict") else {"type": type(exc).__name__, "code": "internal_error", "message": str(exc)}
                record = {**base, "ok": False, "latency_ms": None, "input_tokens": 0, "output_tokens": 0, "output": None, "error": error}
                if isinstance(exc, NeedsReview):  # every tier tried: the record says which, and why each failed
                    record.update(tier=None, attempts=[a.to_dict() for a in exc.attempts])
                raise StepFailed(agent.name, record, exc) from exc
            span.set_attributes(
                {"gen_ai.usage.input_tokens": result.input_tokens, "gen_ai.usage.output_tokens": result.output_tokens, "flotilla.repaired": result.repaired}
            )
            record = {
                **base,
                "model": result.model,
                "ok": True,
                "latency_ms": round(result.latency_ms, 1),
                "input_tokens": result.input_tokens,
                "output_tokens": result.output_tokens,
                "output": output,
                "repaired": result.repaired,
                "notes": result.notes,
                "tier": result.tier,
                "attempts": result.attempts,
                "verification": result.verification,
            }
            if result.tool_calls:
                record["tool_calls"] = result.tool_calls
            return {"outputs": {agent.name: output}, "steps": [record]}

    node.__name__ = f"agent_{agent.name}"
    return node


def _review_uncertain_call(step: str, exc: Exception) -> Exception:
    """A tool call that may have happened before an interruption ends the run `needs_review`."""
    from flotilla.graphs.tool_node import UncertainToolCall
    from flotilla.tools.errors import ToolCallUncertain

    return UncertainToolCall(step, exc) if isinstance(exc, ToolCallUncertain) else exc


def _router(path: str, cases: dict[str, str], default: str | None):
    agent_name, *fields = path.split(".")

    def route(state: RunState) -> str:
        value: Any = (state.get("outputs") or {}).get(agent_name)
        for field in fields:
            value = value.get(field) if isinstance(value, dict) else None
        target = cases.get(str(value), default)
        return LG_END if target in (None, END) else target

    return route


def compile_workflow(
    spec: WorkflowSpec,
    agents: dict[str, Agent],
    tracer: Tracer,
    *,
    rails: RailsHook | None = None,
    checkpointer: Checkpointer = None,
    tools: ToolHub | None = None,
) -> CompiledStateGraph:
    """`agents` are the model steps (graphs/build.py); tool and function nodes are built here
    from the spec (`tools`: the runtime's MCP hub, which tool nodes call)."""
    builder = StateGraph(RunState)
    for name, agent in agents.items():
        builder.add_node(name, agent_node(agent, tracer, workflow=spec.name, rails=rails))
    for name, node in _deterministic_nodes(spec, tracer, rails, tools).items():
        builder.add_node(name, node)
    leaves = _approval_gates(builder, spec, tracer)  # a step with `approval:` leaves through its gate
    builder.add_edge(START, spec.entry_agent)
    has_outgoing = set()
    for edge in spec.edges:
        has_outgoing.add(edge.source)
        if edge.to is not None:
            builder.add_edge(leaves(edge.source), LG_END if edge.to == END else edge.to)
        else:
            targets = {t: (LG_END if t == END else t) for t in edge.targets}
            path_map = {**targets, LG_END: LG_END}
            builder.add_conditional_edges(leaves(edge.source), _router(edge.switch, edge.cases, edge.default), path_map)
    for name in spec.agents:
        if name not in has_outgoing:
            builder.add_edge(leaves(name), LG_END)
    return builder.compile(checkpointer=checkpointer, name=spec.name)


def _approval_gates(builder: StateGraph, spec: WorkflowSpec, tracer: Tracer):
    """Add a gate node after each step with `approval:` (graphs/approval.py); returns the node
    the run leaves a step from (its gate, or the step itself)."""
    from flotilla.graphs.approval import approval_gate, gate_name
    from flotilla.graphs.approval_spec import approval_of

    gates = {}
    for name, node in spec.agents.items():
        approval = approval_of(node.approval)
        if approval is not None:
            gates[name] = gate_name(name)
            builder.add_node(gates[name], approval_gate(name, approval, tracer, workflow=spec.name))
            builder.add_edge(name, gates[name])
    return lambda name: gates.get(name, name)


def _deterministic_nodes(spec: WorkflowSpec, tracer: Tracer, rails: RailsHook | None, tools: ToolHub | None) -> dict[str, Any]:
    """The spec's tool and function nodes as LangGraph nodes (they call no model)."""
    from flotilla.graphs.build import load_output_schema, resolve_ref
    from flotilla.graphs.function_node import function_node
    from flotilla.graphs.tool_node import tool_node

    nodes: dict[str, Any] = {}
    for name, node in spec.agents.items():
        if node.kind == "tool":
            nodes[name] = tool_node(name, node, tools, tracer, workflow=spec.name, rails=rails)
        elif node.kind == "function":
            assert node.function is not None
            output = load_output_schema(node.output_schema, spec.base_dir) if node.output_schema else None
            nodes[name] = function_node(name, resolve_ref(node.function), node.function, tracer, workflow=spec.name, output=output)
    return nodes
