"""Verification of an agent's answer: after schema validation, before it enters the state.

A schema-valid answer can still be wrong. Each agent has a list of named checks; every answer
is run through all of them and each verdict (check, passed, message) is a
`gen_ai.evaluation.result` event on the step's span and part of the step record. Any failed
check sends the step to its next model tier (agents/cascade.py).

Built in, on by default: `degenerate_text` on every string field, and `confidence` where the
output schema has a `confidence` field. Declared per agent in YAML (`verify:`):

    verify:
      - grounded: [vendor, invoice_number, line_items.description]   # values must be in the input
      - confidence: 0.6                                               # the model's own, at least
      - name: lines_add_up
        expr: approx(sum(line_items.amount), subtotal)
        message: the line items do not add up to the subtotal
      - name: known_vendor
        call: my_project.checks:known_vendor                          # (output, state) -> bool | str
        message: the vendor is not in the supplier list
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from opentelemetry.trace import Span

from flotilla.agents.degenerate import degenerate_reason, string_fields
from flotilla.agents.expressions import Expression, ExpressionError
from flotilla.agents.grounding import in_source, normalise
from flotilla.audit.semconv import evaluation_event

__all__ = [
    "Verdict",
    "Check",
    "DegenerateText",
    "Grounded",
    "Confidence",
    "ExpressionCheck",
    "CallableCheck",
    "Verifier",
    "DEFAULT_MIN_CONFIDENCE",
    "CheckFunction",
    "failures",
]

DEFAULT_MIN_CONFIDENCE = 0.5

CheckFunction = Callable[[dict[str, Any], dict[str, Any]], "bool | str | None"]
"""A `call:` check: (output, state) → True (pass), False (fail with the declared message), or a
string (fail: the string says why)."""


@dataclass(frozen=True, slots=True)
class Verdict:
    check: str
    passed: bool
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.check, "passed": self.passed, "message": self.message}


class Check(Protocol):
    name: str

    def __call__(self, output: dict[str, Any], state: dict[str, Any]) -> str | None:
        """None when the output passes; otherwise why it fails."""


@dataclass(frozen=True, slots=True)
class DegenerateText:
    """No string field of the output may be degenerate (see agents/degenerate.py)."""

    name: str = "degenerate_text"

    def __call__(self, output: dict[str, Any], state: dict[str, Any]) -> str | None:
        found = [f"{path} {why}" for path, text in string_fields(output) if (why := degenerate_reason(text))]
        # The same sentence or object twice in one list is a loop too (reasons, findings).
        for path, items in _lists(output):
            keys = [json.dumps(item, sort_keys=True) for item in items if isinstance(item, dict) or (isinstance(item, str) and len(item) >= 12)]
            if len(keys) != len(set(keys)):
                found.append(f"{path} repeats an item ({len(keys) - len(set(keys))} duplicate(s) of {len(items)})")
        return "; ".join(found[:3]) or None


@dataclass(frozen=True, slots=True)
class Grounded:
    """Each value at these field paths (`vendor`, `line_items.description`) must be found in the
    input: text as written, numbers as printed, dates in a usual printed form. Nulls pass."""

    fields: tuple[str, ...]
    name: str = "grounded"

    def __call__(self, output: dict[str, Any], state: dict[str, Any]) -> str | None:
        source = normalise(str(state.get("input", "")))
        # Field names only: the values are the model's content, recorded per policy, not in messages.
        missing = [path for path in self.fields if any(not in_source(v, source) for v in _values_at(output, path.split(".")))]
        return f"not found in the input: {', '.join(missing)}" if missing else None


@dataclass(frozen=True, slots=True)
class Confidence:
    """The model's own confidence (a `confidence` field of the output) must reach `minimum`."""

    minimum: float = DEFAULT_MIN_CONFIDENCE
    field: str = "confidence"
    name: str = "confidence"

    def __call__(self, output: dict[str, Any], state: dict[str, Any]) -> str | None:
        value = output.get(self.field)
        if isinstance(value, (int, float)) and value < self.minimum:
            return f"the model's confidence {value:g} is below {self.minimum:g}"
        return None


@dataclass(frozen=True, slots=True)
class ExpressionCheck:
    name: str
    expression: Expression
    message: str

    def __call__(self, output: dict[str, Any], state: dict[str, Any]) -> str | None:
        try:
            ok = self.expression.evaluate(output)
        except ExpressionError as exc:
            return f"{self.message} (`{self.expression.source}` could not be evaluated: {exc})"
        return None if ok else self.message


@dataclass(frozen=True, slots=True)
class CallableCheck:
    name: str
    function: CheckFunction
    message: str

    def __call__(self, output: dict[str, Any], state: dict[str, Any]) -> str | None:
        verdict = self.function(output, state)
        if isinstance(verdict, str):
            return verdict or self.message
        return None if verdict or verdict is None else self.message


@dataclass(frozen=True, slots=True)
class Verifier:
    checks: tuple[Check, ...]

    @classmethod
    def defaults(cls, json_schema: dict[str, Any], *extra: Check, degenerate: bool = True) -> Verifier:
        """The built-ins (degenerate text; confidence where the schema has one), then `extra`.
        A declared `confidence` check replaces the default one."""
        checks: list[Check] = [DegenerateText()] if degenerate else []
        has_confidence = "confidence" in json_schema.get("properties", {})
        if has_confidence and not any(isinstance(c, Confidence) for c in extra):
            checks.append(Confidence())
        return cls((*checks, *extra))

    def verify(self, output: dict[str, Any], state: dict[str, Any], span: Span | None = None) -> list[Verdict]:
        verdicts = []
        for check in self.checks:
            try:
                why = check(output, state)
            except Exception as exc:  # noqa: BLE001 — a crashing check is a failed check, said so
                why = f"the check raised {type(exc).__name__}: {exc}"
            verdict = Verdict(check.name, why is None, why or "")
            verdicts.append(verdict)
            if span is not None:
                evaluation_event(span, f"verify.{check.name}", passed=verdict.passed, explanation=verdict.message)
        return verdicts


def failures(verdicts: Sequence[Verdict]) -> list[str]:
    return [f"{v.check}: {v.message}" for v in verdicts if not v.passed]


def _values_at(value: Any, path: list[str]) -> list[Any]:
    """The values at a field path, projected over lists (`line_items.amount`)."""
    if isinstance(value, list):
        return [found for item in value for found in _values_at(item, path)]
    if not path:
        return [value]
    if isinstance(value, dict) and path[0] in value:
        return _values_at(value[path[0]], path[1:])
    return []


def _lists(value: Any, path: str = "") -> list[tuple[str, list[Any]]]:
    """(`path`, list) for every list in a JSON value."""
    out: list[tuple[str, list[Any]]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            out += _lists(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        out.append((path or "output", value))
        for index, item in enumerate(value):
            out += _lists(item, f"{path}.{index}" if path else str(index))
    return out
