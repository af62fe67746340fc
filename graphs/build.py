"""From a parsed spec to runnable agents: resolve files, schemas, hooks and model aliases.

`check_spec` finds every semantic problem at once (unknown agents in edges, missing prompt
files, unreachable agents, schemas or hooks that do not resolve, unknown model aliases), each
with the line to fix; `build_agents` turns a clean spec into `Agent` objects.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from flotilla.agents.agent import Agent
from flotilla.agents.models.registry import ModelRegistry
from flotilla.agents.output import JsonSchemaOutput, OutputSchema, PydanticOutput
from flotilla.graphs.approval_spec import check_approvals
from flotilla.graphs.spec import END, SpecError, SpecProblem, WorkflowSpec
from flotilla.graphs.verify_spec import build_verifier, check_tiers, check_verify, tiers_of

if TYPE_CHECKING:
    from flotilla.tools import ToolHub

__all__ = ["check_spec", "validate_spec", "build_agents", "resolve_ref", "load_output_schema"]


class _Unresolved(Exception):
    pass


def resolve_ref(ref: str) -> Any:
    """Import `package.module:attribute`."""
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise _Unresolved(f"{ref!r} is not of the form `package.module:name`")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise _Unresolved(f"cannot import module {module_name!r} ({exc})") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise _Unresolved(f"module {module_name!r} has no attribute {attr!r}") from None


def load_output_schema(ref: str, base_dir: Path) -> OutputSchema:
    if ref.endswith(".json"):
        path = base_dir / ref
        if not path.is_file():
            raise _Unresolved(f"JSON Schema file {path} does not exist")
        try:
            schema = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise _Unresolved(f"JSON Schema file {path} is not valid JSON ({exc})") from None
        if not isinstance(schema, dict) or schema.get("type") != "object":
            raise _Unresolved(f"JSON Schema file {path} must describe an object (`\"type\": \"object\"`)")
        return JsonSchemaOutput(schema, name=path.stem)
    model = resolve_ref(ref)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise _Unresolved(f"{ref!r} is not a pydantic model class")
    return PydanticOutput(model)


def _reachable(spec: WorkflowSpec) -> set[str]:
    seen, frontier = set(), [spec.entry_agent]
    while frontier:
        node = frontier.pop()
        if node in seen or node not in spec.agents:
            continue
        seen.add(node)
        frontier.extend(t for e in spec.edges if e.source == node for t in e.targets)
    return seen


def check_spec(
    spec: WorkflowSpec,
    known_aliases: Iterable[str],
    tool_servers: Iterable[str] | None = None,
    known_tools: Mapping[str, Iterable[str]] | None = None,
) -> list[SpecProblem]:
    """Every semantic problem in `spec`. `tool_servers`, when given, are the configured MCP
    server names that tool allowlists are checked against; `known_tools`, the tools each server
    is known to offer (its pins in mcp.lock.json), that tool nodes are checked against."""
    if spec.kind == "python":
        from flotilla.graphs.factory import check_python

        return check_python(spec, known_aliases, tool_servers)
    if spec.kind == "router":
        from flotilla.graphs.router import check_router

        return check_router(spec)
    file = str(spec.source) if spec.source else "<workflow>"
    problems: list[SpecProblem] = []

    def problem(message: str, *loc: Any) -> None:
        problems.append(SpecProblem(file=file, line=spec.line_of(*loc), message=message))

    names = set(spec.agents)
    known = ", ".join(sorted(names))
    if spec.entry is not None and spec.entry not in names:
        problem(f"entry: unknown agent {spec.entry!r}; known agents: {known}", "entry")
    if spec.output is not None and spec.output not in names:
        problem(f"output: unknown agent {spec.output!r}; known agents: {known}", "output")
    for i, edge in enumerate(spec.edges):
        if edge.source not in names:
            problem(f"edge from unknown agent {edge.source!r}; known agents: {known}", "edges", i, "from")
        for key in ("to", "default"):
            target = getattr(edge, key)
            if target is not None and target not in names and target != END:
                problem(f"edge {key} unknown agent {target!r}; known agents: {known} (or END)", "edges", i, key)
        for case, target in edge.cases.items():
            if target not in names and target != END:
                problem(f"switch case {case!r} goes to unknown agent {target!r}; known agents: {known} (or END)", "edges", i, "cases", case)
        if edge.switch is not None and edge.switch.split(".", 1)[0] not in names:
            problem(f"switch reads unknown agent {edge.switch.split('.', 1)[0]!r}; write `agent.field`", "edges", i, "switch")
    sources = [e.source for e in spec.edges]
    for name in {s for s in sources if sources.count(s) > 1}:
        problem(f"agent {name!r} has more than one outgoing edge; use one `switch` edge to branch", "edges")
    if not problems and spec.kind != "research":  # research agents are reached by fan-out, not edges
        for name in sorted(names - _reachable(spec)):
            problem(f"agent {name!r} is unreachable from the entry agent {spec.entry_agent!r}; add an edge to it or remove it", "agents", name)

    aliases = set(known_aliases)
    for name, agent in spec.agents.items():
        if agent.kind != "model":
            from flotilla.graphs.node_checks import check_node

            if spec.kind == "research":
                problem(f"a research workflow's agents are model steps; {name!r} is a {agent.kind} node", "agents", name, agent.kind)
            for message, key in check_node(spec, name, tool_servers, known_tools):
                problem(message, "agents", name, *key)
            continue
        if not (spec.base_dir / agent.instructions).is_file():
            problem(f"instructions file {agent.instructions!r} not found (paths are relative to {spec.base_dir})", "agents", name, "instructions")
        try:
            load_output_schema(agent.output_schema, spec.base_dir)
        except _Unresolved as exc:
            problem(f"output_schema does not resolve: {exc}", "agents", name, "output_schema")
        for hook in ("context", "policy"):
            ref = getattr(agent, hook)
            if ref is not None:
                try:
                    if not callable(resolve_ref(ref)):
                        raise _Unresolved(f"{ref!r} is not callable")
                except _Unresolved as exc:
                    problem(f"{hook} does not resolve: {exc}", "agents", name, hook)
        for message, key in check_tiers(agent, aliases):
            problem(message, "agents", name, *key)
        try:
            output = load_output_schema(agent.output_schema, spec.base_dir)
        except _Unresolved:
            output = None  # reported above
        for message, key in check_verify(agent, output, resolve_ref):
            problem(message, "agents", name, *key)
        if tool_servers is not None and agent.tools:
            from flotilla.tools import Allowlist

            servers = sorted(tool_servers)
            for pattern in Allowlist.of(agent.tools).unmatched(servers):
                problem(f"tool pattern {pattern!r} matches no configured MCP server (configured: {', '.join(servers) or 'none'}); add the server under `mcp_servers:` in flotilla.yaml", "agents", name, "tools")
        for other in agent.reads or []:
            if other not in names:
                problem(f"reads unknown agent {other!r}; known agents: {known}", "agents", name, "reads")
    for message, loc in check_approvals(spec, lambda step: _output_json_schema(spec, step)):
        problem(message, *loc)
    return problems


def _output_json_schema(spec: WorkflowSpec, step: str) -> dict[str, Any] | None:
    """A step's declared output schema, for checking the fields an approval condition reads."""
    ref = spec.agents[step].output_schema
    try:
        return load_output_schema(ref, spec.base_dir).json_schema if ref else None
    except _Unresolved:
        return None  # reported as an output_schema problem


def validate_spec(spec: WorkflowSpec, known_aliases: Iterable[str]) -> WorkflowSpec:
    problems = check_spec(spec, known_aliases)
    if problems:
        raise SpecError(problems)
    return spec


def build_agents(spec: WorkflowSpec, registry: ModelRegistry, tools: ToolHub | None = None) -> dict[str, Agent]:
    """The agents a YAML spec declares (a Python workflow's factory builds its own: none here)."""
    if spec.kind in ("python", "router"):  # a router has no agents: it hands the run to a workflow
        return {}
    validate_spec(spec, registry.aliases)
    agents: dict[str, Agent] = {}
    for name, a in spec.agents.items():
        if a.kind != "model":  # tool and function nodes call no model: graphs/compile.py builds them
            continue
        agents[name] = Agent(
            name=name,
            role=a.role,
            instructions=(spec.base_dir / a.instructions).read_text(encoding="utf-8"),
            output=(output := load_output_schema(a.output_schema, spec.base_dir)),
            binding=registry.resolve(tiers_of(a)[0]),
            escalation=tuple(registry.resolve(alias) for alias in tiers_of(a)[1:]),
            verifier=build_verifier(a, output, resolve_ref),
            reads=tuple(a.reads) if a.reads is not None else None,
            include_input=a.include_input,
            timeout_s=a.timeout_s,
            max_tokens=a.max_tokens,
            context=resolve_ref(a.context) if a.context else None,
            policy=resolve_ref(a.policy) if a.policy else None,
            tools=tuple(a.tools),
            tool_view=tools.view(a.tools) if tools is not None and a.tools else None,
            max_tool_steps=a.max_tool_steps,
        )
    return agents
