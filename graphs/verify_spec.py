"""An agent's `model:` tiers and `verify:` checks: checked for `flotilla validate`, built for a run."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from flotilla.agents.expressions import Expression, ExpressionError, unknown_fields
from flotilla.agents.output import OutputSchema
from flotilla.agents.verify import CallableCheck, Check, Confidence, ExpressionCheck, Grounded, Verifier
from flotilla.graphs.spec import AgentSpec, CheckSpec

__all__ = ["tiers_of", "check_tiers", "check_verify", "build_verifier"]


def tiers_of(agent: AgentSpec) -> list[str]:
    return [agent.model] if isinstance(agent.model, str) else list(agent.model)


def check_tiers(agent: AgentSpec, aliases: set[str]) -> list[tuple[str, tuple[Any, ...]]]:
    """(message, location under the agent) for each problem with its model tiers."""
    tiers = tiers_of(agent)
    known = ", ".join(sorted(aliases))
    if not tiers:
        return [("`model:` is an empty list; name at least one model alias", ("model",))]
    problems = []
    for index, alias in enumerate(tiers):
        where = ("model",) if isinstance(agent.model, str) else ("model", index)
        if alias not in aliases:
            problems.append((f"unknown model alias {alias!r}; declare it under `models:` in flotilla.yaml (known: {known})", where))
        elif alias in tiers[:index]:
            problems.append((f"model tier {alias!r} is listed twice; each tier is tried once", where))
    return problems


def check_verify(
    agent: AgentSpec, output: OutputSchema | None, resolve: Callable[[str], Any]
) -> list[tuple[str, tuple[Any, ...]]]:
    """(message, location under the agent) for each `verify:` entry that would not work."""
    problems: list[tuple[str, tuple[Any, ...]]] = []
    schema = output.json_schema if output is not None else None
    for index, check in enumerate(agent.verify):
        where = ("verify", index, check.kind)
        if check.expr is not None:
            try:
                expression = Expression.parse(check.expr)
            except ExpressionError as exc:
                problems.append((f"verify: {exc}", where))
                continue
            for name in unknown_fields(expression.fields_used, schema) if schema else []:
                problems.append((f"verify: expression {check.expr!r} names {name!r}, which is not a field of the output schema", where))
        elif check.call is not None:
            try:
                function = resolve(check.call)
            except Exception as exc:  # noqa: BLE001 — build.py's resolver says why
                problems.append((f"verify: call does not resolve: {exc}", where))
                continue
            if not callable(function):
                problems.append((f"verify: {check.call!r} is not callable", where))
        elif check.grounded is not None and schema:
            for name in unknown_fields([tuple(path.split(".")) for path in check.grounded], schema):
                problems.append((f"verify: grounded field {name!r} is not a field of the output schema", where))
        elif check.confidence is not None and schema and "confidence" not in schema.get("properties", {}):
            problems.append(("verify: `confidence:` needs a `confidence` field in the output schema", where))
    return problems


def build_verifier(agent: AgentSpec, output: OutputSchema, resolve: Callable[[str], Any]) -> Verifier:
    extra: list[Check] = []
    for check in agent.verify:
        extra.extend(_build(check, resolve))
    degenerate = all(check.degenerate is not False for check in agent.verify)
    return Verifier.defaults(output.json_schema, *extra, degenerate=degenerate)


def _build(check: CheckSpec, resolve: Callable[[str], Any]) -> Iterable[Check]:
    if check.expr is not None:
        yield ExpressionCheck(check.name or "expr", Expression.parse(check.expr), check.message or "")
    elif check.call is not None:
        yield CallableCheck(check.name or check.call, resolve(check.call), check.message or "")
    elif check.grounded is not None:
        yield Grounded(tuple(check.grounded), name=check.name or "grounded")
    elif check.confidence is not None:
        yield Confidence(check.confidence, name=check.name or "confidence")
