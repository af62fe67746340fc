"""`flotilla validate` for tool and function nodes: what each must name, checked before a run.

A tool node must name a configured MCP server and (when the server's tools are pinned in
mcp.lock.json) one of its tools; each `{node.field}` in its arguments must name an earlier
node of the workflow (or `{input}`) and, where that node has an output schema, one of its
fields. A function node's `function:` and `output_schema:` must resolve.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from flotilla.graphs.spec import WorkflowSpec
from flotilla.graphs.tool_node import INPUT_REFERENCE, argument_references

__all__ = ["check_node", "output_fields"]

Problem = tuple[str, tuple[Any, ...]]
"""A message and the key path (under the node) of the line to point at."""


def output_fields(spec: WorkflowSpec, node: str) -> set[str] | None:
    """The top-level fields of a node's output, when its output schema says (else None)."""
    from flotilla.graphs.build import _Unresolved, load_output_schema

    ref = spec.agents[node].output_schema
    if ref is None:
        return None
    try:
        schema = load_output_schema(ref, spec.base_dir).json_schema
    except _Unresolved:
        return None  # reported on that node
    properties = schema.get("properties")
    return set(properties) if isinstance(properties, dict) else None


def _reference_problems(spec: WorkflowSpec, name: str) -> list[Problem]:
    problems: list[Problem] = []
    nodes = sorted(spec.agents)
    for argument, value in spec.agents[name].arguments.items():
        for path in argument_references(value):
            where = ("arguments", argument)
            shown = "{" + ".".join(path) + "}"
            head = path[0]
            if path == (INPUT_REFERENCE,):
                continue
            if head == name:
                problems.append((f"argument {argument!r}: {shown} refers to this node's own output; name an earlier node", where))
            elif head not in spec.agents:
                problems.append((f"argument {argument!r}: {shown} names unknown node {head!r}; known: {', '.join(nodes)} (or {{input}})", where))
            elif len(path) == 1:
                problems.append((f"argument {argument!r}: {shown} is a whole output; name a field, e.g. {{{head}.field}}", where))
            else:
                fields = output_fields(spec, head)
                if fields is not None and path[1] not in fields:
                    problems.append((f"argument {argument!r}: {shown}: {head!r} has no field {path[1]!r} (fields: {', '.join(sorted(fields))})", where))
    return problems


def check_node(
    spec: WorkflowSpec, name: str, tool_servers: Iterable[str] | None, known_tools: Mapping[str, Iterable[str]] | None
) -> list[Problem]:
    """Every problem of one tool or function node."""
    from flotilla.graphs.build import _Unresolved, load_output_schema, resolve_ref

    node = spec.agents[name]
    problems: list[Problem] = []
    if node.kind == "tool":
        assert node.tool is not None
        server, _, tool = node.tool.partition(".")
        servers = sorted(tool_servers) if tool_servers is not None else None
        if servers is not None and server not in servers:
            problems.append((f"tool {node.tool!r}: no MCP server {server!r} is configured (configured: {', '.join(servers) or 'none'}); add it under `mcp_servers:` in flotilla.yaml", ("tool",)))
        elif known_tools is not None and server in known_tools:
            offered = sorted(known_tools[server])
            if tool not in offered:
                problems.append((f"tool {node.tool!r}: MCP server {server!r} has no tool {tool!r} (its tools: {', '.join(offered)})", ("tool",)))
        problems += _reference_problems(spec, name)
    elif node.kind == "function":
        assert node.function is not None
        try:
            if not callable(resolve_ref(node.function)):
                raise _Unresolved(f"{node.function!r} is not callable")
        except _Unresolved as exc:
            problems.append((f"function does not resolve: {exc}", ("function",)))
        if node.output_schema is not None:
            try:
                load_output_schema(node.output_schema, spec.base_dir)
            except _Unresolved as exc:
                problems.append((f"output_schema does not resolve: {exc}", ("output_schema",)))
    return problems
