"""`verify:` expressions: small, safe expressions over an agent's output.

    sum(line_items.amount) == subtotal
    approx(subtotal + tax, total)
    len(reasons) > 0 and min(words(r) for r in reasons) >= 3

Names are the output's fields; `a.b` reads a field of an object, and of every item of a list
(`line_items.amount` is the list of amounts). Evaluated by simpleeval (no `eval`): no
imports, no dunder access, no assignment. `fields_used` lets `flotilla validate` check each
name against the output schema before a run.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from simpleeval import EvalWithCompoundTypes, InvalidExpression

__all__ = ["Expression", "ExpressionError", "FUNCTIONS", "unknown_fields"]


class ExpressionError(ValueError):
    """The expression does not parse, or uses something it may not."""


def _sum(values: Iterable[Any], start: float = 0) -> float:
    # A missing amount (null) adds nothing rather than ending the check with a TypeError.
    return sum((v for v in values if v is not None), start)


def approx(a: Any, b: Any, tol: float = 0.01) -> bool:
    """Equal within `tol` (absolute): money sums that differ by float rounding still match."""
    if a is None or b is None:
        return False
    return math.isclose(float(a), float(b), rel_tol=0.0, abs_tol=tol)


def words(text: Any) -> int:
    """How many words the text has (space-separated runs of letters, with hyphens or apostrophes):
    a sentence has several; `fie_de_fie` or `INV-2026` has none."""
    return sum(1 for token in str(text or "").split() if _WORD.fullmatch(token.strip(".,;:!?()\"'")))


_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")


FUNCTIONS: dict[str, Any] = {
    "sum": _sum, "len": len, "abs": abs, "min": min, "max": max, "all": all, "any": any,
    "round": round, "approx": approx, "words": words, "lower": lambda s: str(s).casefold(),
}
_CONSTANTS = {"None": None, "True": True, "False": False, "null": None, "true": True, "false": False}


class _Record:
    """A JSON object whose fields read as attributes (`invoice.vendor`)."""

    __slots__ = ("_data",)

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def __getattr__(self, name: str) -> Any:
        try:
            return _wrap(self._data[name])
        except KeyError:
            raise AttributeError(name) from None

    def __eq__(self, other: object) -> bool:
        return self._data == (other._data if isinstance(other, _Record) else other)

    __hash__ = None  # type: ignore[assignment]


class _Column(list):
    """A JSON array; `items.amount` projects a field over every item."""

    def __getattr__(self, name: str) -> _Column:
        if name.startswith("_"):
            raise AttributeError(name)
        return _Column(getattr(item, name) if isinstance(item, _Record) else None for item in self)


def _wrap(value: Any) -> Any:
    if isinstance(value, dict):
        return _Record(value)
    if isinstance(value, list):
        return _Column(_wrap(v) for v in value)
    return value


def _bound_names(tree: ast.AST) -> set[str]:
    """Names a comprehension binds (`r` in `for r in reasons`): not output fields."""
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.comprehension):
            bound |= {n.id for n in ast.walk(node.target) if isinstance(n, ast.Name)}
    return bound


def _paths(tree: ast.AST) -> list[tuple[str, ...]]:
    """Every field path the expression reads (`line_items.amount` → ("line_items", "amount"))."""
    bound = _bound_names(tree) | set(FUNCTIONS) | set(_CONSTANTS)
    paths: list[tuple[str, ...]] = []
    inner: set[int] = set()
    for node in ast.walk(tree):
        if id(node) in inner or not isinstance(node, (ast.Attribute, ast.Name)):
            continue
        parts: list[str] = []
        current: ast.AST = node
        while isinstance(current, ast.Attribute):
            parts.append(current.attr)
            inner.add(id(current.value))
            current = current.value
        if isinstance(current, ast.Name) and current.id not in bound:
            paths.append((current.id, *reversed(parts)))
    return paths


@dataclass(frozen=True)
class Expression:
    source: str
    tree: ast.Expression

    @classmethod
    def parse(cls, source: str) -> Expression:
        try:
            tree = ast.parse(source.strip(), mode="eval")
        except SyntaxError as exc:
            raise ExpressionError(f"expression {source!r} does not parse: {exc.msg} (column {exc.offset})") from None
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
                raise ExpressionError(f"expression {source!r} reads {node.attr!r}; names starting with _ are not allowed")
            if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS):
                raise ExpressionError(f"expression {source!r} calls something other than {', '.join(sorted(FUNCTIONS))}")
        return cls(source, tree)

    @property
    def fields_used(self) -> list[tuple[str, ...]]:
        return _paths(self.tree)

    def evaluate(self, output: dict[str, Any]) -> Any:
        """The expression's value on `output`; ExpressionError when it cannot be computed."""
        names = {**_CONSTANTS, **{k: _wrap(v) for k, v in output.items()}}
        evaluator = EvalWithCompoundTypes(names=names, functions=dict(FUNCTIONS))  # it adds to the dict it is given
        try:
            return evaluator.eval(self.source.strip(), previously_parsed=self.tree.body)
        except (InvalidExpression, ArithmeticError, TypeError, ValueError, AttributeError, KeyError, IndexError) as exc:
            raise ExpressionError(f"{type(exc).__name__}: {exc}") from None


def unknown_fields(paths: list[tuple[str, ...]], schema: dict[str, Any]) -> list[str]:
    """The paths that name no field of the JSON schema (objects, arrays of objects, nullable)."""
    defs = schema.get("$defs", {})
    missing = []
    for path in paths:
        node: dict[str, Any] | None = schema
        for part in path:
            node = _field(node, part, defs)
            if node is None:
                missing.append(".".join(path))
                break
    return missing


def _field(node: dict[str, Any] | None, name: str, defs: dict[str, Any]) -> dict[str, Any] | None:
    for candidate in _alternatives(node, defs):
        if candidate.get("type") == "array" or "items" in candidate:
            found = _field(candidate.get("items", {}), name, defs)  # projection over the items
        else:
            found = candidate.get("properties", {}).get(name)
        if found is not None:
            return found
    return None


def _alternatives(node: dict[str, Any] | None, defs: dict[str, Any]) -> list[dict[str, Any]]:
    """The schema and, through `$ref` and `anyOf`/`oneOf` (pydantic's nullable), what it stands for."""
    if not node:
        return []
    if "$ref" in node:
        return _alternatives(defs.get(node["$ref"].rsplit("/", 1)[-1]), defs)
    out = [node]
    for key in ("anyOf", "oneOf", "allOf"):
        for option in node.get(key, []):
            out.extend(_alternatives(option, defs))
    return out
