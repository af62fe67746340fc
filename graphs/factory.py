"""Python workflows: a LangGraph built in Python that the runner treats exactly like a YAML one.

A factory takes a `WorkflowContext` and returns an *uncompiled* `StateGraph` whose state has
flotilla's `RunState` keys (`input`, `outputs`, `steps`; subclass `RunState` to add your own).
The runner compiles it with its own checkpointer and wraps it as it wraps every workflow:
input and output rails, the run record, the `invoke_workflow` span, resume, the MCP tool.

    from flotilla.graphs import RunState, WorkflowContext, python_workflow

    @python_workflow(description="Triage an invoice.", input="A supplier invoice as plain text.", output="write")
    def invoice(ctx: WorkflowContext) -> StateGraph:
        extract = Agent(name="extract", ..., binding=ctx.model("specialist-extract"))
        graph = StateGraph(RunState)
        graph.add_node("extract", ctx.node(extract))
        ...
        return graph

A straight line of nodes needs no edges written out: `return chain_nodes({"extract": ..., "decide": ...})`.

Register it by name — `workflows: {invoice_py: "mypkg.flows:invoice"}` in flotilla.yaml, or an
entry point in the `flotilla.workflows` group — and `flotilla run invoice_py`, `flotilla
validate invoice_py` and the MCP gateway see it. A plain function works too; its docstring is
then the tool description. Nodes may flag a run for a person by returning
`{"review": [{"step": ..., "reason": ...}]}` (see graphs/status.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flotilla.audit.errors import ConfigError
from flotilla.graphs.spec import InputSpec, SpecProblem, WorkflowSettings, WorkflowSpec

if TYPE_CHECKING:
    from langgraph.graph import StateGraph
    from langgraph.graph.state import CompiledStateGraph
    from langgraph.types import Checkpointer
    from opentelemetry.trace import Tracer

    from flotilla.agents.agent import Agent
    from flotilla.agents.models.registry import Binding, ModelRegistry
    from flotilla.graphs.compile import RailsHook
    from flotilla.tools import ToolHub

__all__ = ["WorkflowContext", "PythonWorkflow", "python_workflow", "chain_nodes", "python_spec", "compile_python", "check_python", "REQUIRED_STATE_KEYS"]

REQUIRED_STATE_KEYS = ("input", "outputs", "steps")
"""What the runner reads and writes in every workflow's state."""


@dataclass
class WorkflowContext:
    """What a factory builds its graph from: model bindings, tool views, agent nodes."""

    workflow: str
    """The name the workflow is registered under (span and rail attributes use it)."""
    registry: ModelRegistry
    tracer: Tracer
    rails: RailsHook | None = None
    tools: ToolHub | None = None
    tool_servers: frozenset[str] | None = None
    """When validating without a tool hub: the configured MCP servers patterns are checked against."""
    agents: dict[str, Agent] = field(default_factory=dict)
    """Every agent given to `node()`, by name (the runner reports their model fallbacks)."""

    def model(self, alias: str) -> Binding:
        """The binding of a model alias from flotilla.yaml (ConfigError if it is not declared)."""
        return self.registry.resolve(alias)

    def tool_view(self, patterns: Iterable[str]) -> Any:
        """The MCP tools an agent may use (`server.tool`, globs allowed), for `Agent(tool_view=…)`."""
        patterns = list(patterns)
        if self.tools is not None:
            return self.tools.view(patterns)
        if self.tool_servers is not None:
            from flotilla.tools import Allowlist

            unmatched = Allowlist.of(patterns).unmatched(sorted(self.tool_servers))
            if unmatched:
                raise ConfigError(
                    f"tool pattern(s) {', '.join(map(repr, unmatched))} match no configured MCP server "
                    f"(configured: {', '.join(sorted(self.tool_servers)) or 'none'})"
                )
        return None

    def node(self, agent: Agent) -> Callable[..., Any]:
        """A LangGraph node running `agent` as one step: its span, rails on its output, its step record."""
        from flotilla.graphs.compile import agent_node

        self.agents[agent.name] = agent
        return agent_node(agent, self.tracer, workflow=self.workflow, rails=self.rails)

    def tool_node(
        self, name: str, tool: str, arguments: dict[str, Any], *, on_error: str = "fail", timeout_s: float | None = None
    ) -> Callable[..., Any]:
        """A node calling the MCP tool `server.tool` directly (graphs/tool_node.py), like a YAML `tool:` node."""
        from flotilla.graphs.spec import AgentSpec
        from flotilla.graphs.tool_node import tool_node

        spec = AgentSpec(role=name, tool=tool, arguments=arguments, on_error=on_error, timeout_s=timeout_s)  # type: ignore[arg-type]
        server = tool.partition(".")[0]
        if self.tools is None and self.tool_servers is not None and server not in self.tool_servers:
            raise ConfigError(f"tool node {name!r}: no MCP server {server!r} is configured (configured: {', '.join(sorted(self.tool_servers)) or 'none'})")
        return tool_node(name, spec, self.tools, self.tracer, workflow=self.workflow, rails=self.rails)

    def function_node(self, name: str, function: Callable[[dict[str, Any]], Any], output: type | None = None) -> Callable[..., Any]:
        """A node running deterministic Python over the state (graphs/function_node.py), like a YAML `function:` node."""
        from flotilla.agents.output import PydanticOutput
        from flotilla.graphs.function_node import function_node

        ref = f"{function.__module__}:{function.__qualname__}"
        return function_node(name, function, ref, self.tracer, workflow=self.workflow, output=PydanticOutput(output) if output else None)


@dataclass(frozen=True)
class PythonWorkflow:
    """A graph factory plus what the MCP tool and the runner need to know about it."""

    build: Callable[[WorkflowContext], StateGraph]
    description: str = ""
    input: InputSpec = field(default_factory=InputSpec)
    output: str | None = None
    """The agent whose output is the workflow's output (default: the last step's)."""
    settings: WorkflowSettings = field(default_factory=WorkflowSettings)
    rails: dict[str, Any] | None = None

    def __call__(self, ctx: WorkflowContext) -> StateGraph:
        return self.build(ctx)


def python_workflow(
    *,
    description: str | None = None,
    input: str | None = None,
    max_input_bytes: int | None = None,
    output: str | None = None,
    settings: dict[str, Any] | None = None,
    rails: dict[str, Any] | None = None,
) -> Callable[[Callable[[WorkflowContext], StateGraph]], PythonWorkflow]:
    """Declare a graph factory with its metadata (validated like the same YAML keys would be)."""

    def wrap(build: Callable[[WorkflowContext], StateGraph]) -> PythonWorkflow:
        return PythonWorkflow(
            build=build,
            description=description if description is not None else _doc(build),
            input=InputSpec(**({"description": input} if input else {}), max_bytes=max_input_bytes),
            output=output,
            settings=WorkflowSettings(**(settings or {})),
            rails=rails,
        )

    return wrap


def chain_nodes(nodes: dict[str, Callable[..., Any]], state: type | None = None) -> StateGraph:
    """An uncompiled graph running `nodes` one after another, in the dict's order, over `state`
    (default `RunState`; a subclass of it adds keys of your own)."""
    if not nodes:
        raise ConfigError("chain_nodes: give at least one node")
    from langgraph.graph import END, START, StateGraph  # here, so `flotilla validate` does not import LangGraph

    from flotilla.graphs.compile import RunState

    graph = StateGraph(state or RunState)
    for name, node in nodes.items():
        graph.add_node(name, node)
    order = list(nodes)
    graph.add_edge(START, order[0])
    for before, after in zip(order, order[1:]):
        graph.add_edge(before, after)
    graph.add_edge(order[-1], END)
    return graph


def _doc(obj: Any) -> str:
    return " ".join((obj.__doc__ or "").split())


def resolve_factory(ref: str) -> PythonWorkflow:
    """The factory `ref` names, or a ConfigError saying what is wrong with it."""
    from flotilla.graphs.build import _Unresolved, resolve_ref

    try:
        target = resolve_ref(ref)
    except _Unresolved as exc:
        raise ConfigError(f"Python workflow factory {ref!r} does not resolve: {exc}") from None
    if isinstance(target, PythonWorkflow):
        return target
    if callable(target) and not isinstance(target, type):
        return PythonWorkflow(build=target, description=_doc(target))
    raise ConfigError(f"Python workflow factory {ref!r} is a {type(target).__name__}, not a function taking a WorkflowContext (or a @python_workflow)")


def python_spec(name: str, ref: str) -> WorkflowSpec:
    """The spec of a registered Python workflow: its metadata, and `factory` naming the code."""
    workflow = resolve_factory(ref)
    try:
        return WorkflowSpec(
            name=name,
            kind="python",
            factory=ref,
            description=workflow.description,
            input=workflow.input,
            output=workflow.output,
            settings=workflow.settings,
            rails=workflow.rails,
        )
    except ValueError as exc:  # pydantic's ValidationError is one
        raise ConfigError(f"Python workflow {name!r} ({ref}): {exc}") from None


def compile_python(
    spec: WorkflowSpec, ctx: WorkflowContext, *, checkpointer: Checkpointer = None
) -> CompiledStateGraph:
    """Build the factory's graph and compile it with the runner's checkpointer."""
    from langgraph.graph import StateGraph

    assert spec.factory is not None
    workflow = resolve_factory(spec.factory)
    try:
        graph = workflow(ctx)
    except ConfigError as exc:  # an undeclared model alias, a tool pattern matching no server, …
        raise ConfigError(f"Python workflow {spec.name!r}: {exc.message}") from None
    except Exception as exc:  # noqa: BLE001 — the author's code: say where it failed, without a traceback
        raise ConfigError(f"Python workflow {spec.name!r}: the factory {spec.factory} raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(graph, StateGraph):
        what = "a compiled graph; return the StateGraph before .compile() (flotilla compiles it with its checkpointer)" if hasattr(graph, "get_graph") else f"{type(graph).__name__}"
        raise ConfigError(f"Python workflow {spec.name!r}: the factory {spec.factory} returned {what}, not a langgraph StateGraph")
    missing = [key for key in REQUIRED_STATE_KEYS if key not in graph.channels]
    if missing:
        raise ConfigError(
            f"Python workflow {spec.name!r}: the graph's state lacks {', '.join(missing)}; "
            "build it on flotilla.graphs.RunState (or a TypedDict subclassing it)"
        )
    if spec.output is not None and spec.output not in graph.nodes:
        raise ConfigError(f"Python workflow {spec.name!r}: output {spec.output!r} is not a node of the graph (nodes: {', '.join(graph.nodes)})")
    try:
        return graph.compile(checkpointer=checkpointer, name=spec.name)
    except ValueError as exc:  # LangGraph's structural checks (no entry point, unknown edge target, …)
        raise ConfigError(f"Python workflow {spec.name!r}: the graph does not compile: {exc}") from None


class _NotForValidation:
    """Stands in for every model while `validate` builds the graph: nothing is loaded or called."""

    name = "validation-only"
    local = True
    provider = "none"

    async def complete(self, request: Any) -> Any:
        raise ConfigError("models are not called while validating a workflow")


def check_python(spec: WorkflowSpec, known_aliases: Iterable[str], tool_servers: Iterable[str] | None = None) -> list[SpecProblem]:
    """Resolve the factory and build and compile its graph against the configured aliases and
    MCP servers, without loading a model or starting a server."""
    from opentelemetry.trace import NoOpTracer

    from flotilla.agents.models.registry import ModelEndpoint, ModelRegistry

    registry = ModelRegistry(
        {alias: ModelEndpoint() for alias in known_aliases},
        embedded=_NotForValidation,
        http_client=lambda endpoint, key: _NotForValidation(),
    )
    ctx = WorkflowContext(spec.name, registry, NoOpTracer(), tool_servers=frozenset(tool_servers) if tool_servers is not None else None)
    try:
        compile_python(spec, ctx)
    except ConfigError as exc:
        return [SpecProblem(file=spec.factory or spec.name, line=None, message=exc.message)]
    return []
