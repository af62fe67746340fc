"""The labelled cases of an eval, checked against the workflow before anything runs.

A dataset is JSONL, one case a line: `{"id", "input", "expected": {agent: {field: value}}, "tags"}`
(read by flotilla.graphs.dataset, which checks JSON and shape). Every expected field must be one
the agent's output schema has, with a value of its type; the first problem found is reported
with the file and line to fix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema

from flotilla.graphs.dataset import DatasetError, load_cases
from flotilla.graphs.spec import WorkflowSpec

__all__ = ["EvalCase", "read_cases", "check_cases", "check_scorer_fields", "output_schemas", "DatasetError"]


@dataclass(frozen=True)
class EvalCase:
    id: str
    input: str
    expected: dict[str, dict[str, Any]]
    tags: list[str]
    line: int

    def fields(self) -> dict[str, Any]:
        """`agent.field` → expected value."""
        return {f"{agent}.{name}": value for agent, values in self.expected.items() for name, value in values.items()}


def read_cases(path: Path) -> list[EvalCase]:
    """Every case of `path` (the shared JSONL loader), or a DatasetError naming the file and line."""
    return [EvalCase(c.id, c.input, {a: dict(v) for a, v in c.expected.items()}, list(c.tags), c.line) for c in load_cases(path)]


def output_schemas(spec: WorkflowSpec) -> dict[str, dict[str, Any]]:
    """The JSON Schema of each agent's output, for agents that declare one."""
    from flotilla.graphs.build import load_output_schema

    schemas = {}
    for name, agent in spec.agents.items():
        if agent.output_schema:
            schemas[name] = load_output_schema(agent.output_schema, spec.base_dir).json_schema
    return schemas


def check_cases(cases: list[EvalCase], spec: WorkflowSpec, path: Path) -> None:
    """Every expected field exists in its agent's output schema and has a value of its type."""
    schemas = output_schemas(spec)
    for case in cases:
        where = f"{path} line {case.line}"
        for agent, values in case.expected.items():
            if agent not in schemas:
                produced = ", ".join(sorted(schemas)) or "none"
                raise DatasetError(f"{where}: workflow {spec.name!r} has no agent {agent!r} with an output schema (agents with one: {produced})")
            schema = schemas[agent]
            properties = schema.get("properties", {})
            for name, value in values.items():
                if name not in properties:
                    raise DatasetError(f"{where}: agent {agent!r} does not produce a field {name!r}; its fields: {', '.join(properties)}")
                # Labels may give part of an object (line items by description and amount only).
                field_schema = _without_required({**properties[name], "$defs": schema.get("$defs", {})})
                try:
                    jsonschema.validate(value, field_schema)
                except jsonschema.ValidationError as exc:
                    raise DatasetError(f"{where}: {agent}.{name}: {json.dumps(value)[:60]} is not a valid value ({exc.message[:160]})") from None


def _without_required(node: Any, in_properties: bool = False) -> Any:
    if isinstance(node, dict):
        return {k: _without_required(v, k == "properties") for k, v in node.items() if in_properties or k != "required"}
    if isinstance(node, list):
        return [_without_required(v) for v in node]
    return node


def check_scorer_fields(scorers: Any, spec: WorkflowSpec) -> None:
    """Every `agent.field` a scorers file names is one the workflow produces."""
    schemas = output_schemas(spec)
    for name in scorers.by_field:
        agent, field = name.split(".", 1)
        if field not in schemas.get(agent, {}).get("properties", {}):
            raise DatasetError(f"{scorers.source}: {name}: workflow {spec.name!r} produces no such field (agents with outputs: {', '.join(sorted(schemas))})")
