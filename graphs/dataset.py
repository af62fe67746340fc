"""Labelled cases for `flotilla eval` and fine-tuning: one JSON object per line of a JSONL file.

    {"id": "inv-eval-0001", "input": "<the document as text>",
     "expected": {"extract": {"total": 2734.8, ...}, "decide": {"decision": "hold"}},
     "tags": ["layout:letter", "lang:en", ...]}

`expected.<agent>.<field>` holds the expected value of any output field of that agent (a
subset is fine). This module checks JSON and shape only, naming the file and line of the first
problem; whether the workflow has such an agent and field, and whether the value has the
field's type, is checked against the workflow by the eval. The format and the shipped invoice
dataset are described in datasets/invoices/README.md.

    cases = load_cases("datasets/invoices/eval.jsonl")
    cases[0].id, cases[0].input, cases[0].expected["decide"]["decision"], cases[0].line
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from flotilla.audit.errors import ConfigError

__all__ = ["Case", "DatasetError", "load_cases"]

_Name = Annotated[str, Field(pattern=r"^[A-Za-z_][\w-]*$")]


class DatasetError(ConfigError):
    """A dataset file is missing, not JSONL, or a line is not a case; the message names file and line."""

    code = "invalid_dataset"

    def __init__(self, message: str, *, path: Path | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.path, self.line = path, line


class Case(BaseModel):
    """One labelled case: the workflow's input and the expected values of its agents' outputs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, Field(min_length=1, max_length=200)]
    input: Annotated[str, Field(min_length=1)]
    """The run's input, exactly as `flotilla run --input` would read it."""
    expected: dict[_Name, dict[_Name, Any]] = Field(default_factory=dict)
    """Agent name → output field → expected value (any JSON value, null included)."""
    tags: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    """Free labels (`layout:letter`, `flaw:duplicate`) for breaking results down."""
    _line: int = PrivateAttr(default=0)

    @property
    def line(self) -> int:
        """The 1-based line of the file this case was read from (0 if built in code)."""
        return self._line

    def fields(self) -> list[str]:
        """The expected fields as `agent.field` names, in file order."""
        return [f"{agent}.{name}" for agent, values in self.expected.items() for name in values]

    def tag_values(self, key: str) -> list[str]:
        """The values of `key:value` tags (`tag_values("layout")` → `["letter"]`)."""
        return [tag.split(":", 1)[1] for tag in self.tags if tag.startswith(f"{key}:")]


def _shape_problem(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"] if part != "[key]") or "the line"
    if first["loc"][-1:] == ("[key]",):
        return f"{where}: {first['input']!r} is not an agent or field name (letters, digits, _ and -)"
    if first["type"] == "extra_forbidden":
        return f"unknown key {where!r} (a case has id, input, expected and tags)"
    if first["type"] == "missing":
        return f"missing {where!r}"
    return f"{where}: {first['msg']}"


def load_cases(path: str | Path) -> list[Case]:
    """Every case of a JSONL dataset, in file order. Blank lines are skipped; the first bad line
    raises DatasetError naming the file and the line (`eval.jsonl line 7: not JSON (...)`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such dataset file", path=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read it as UTF-8 text ({exc})", path=path) from None
    cases: list[Case] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"{path} line {number}"
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{where}: not JSON ({exc.msg} at column {exc.colno}); each line must be one JSON object", path=path, line=number) from None
        if not isinstance(value, dict):
            raise DatasetError(f"{where}: a case must be a JSON object, not {type(value).__name__}", path=path, line=number)
        try:
            case = Case.model_validate(value)
        except ValidationError as exc:
            raise DatasetError(f"{where}: {_shape_problem(exc)}", path=path, line=number) from None
        if case.id in seen:
            raise DatasetError(f"{where}: id {case.id!r} is already used on line {seen[case.id]}; ids must be unique", path=path, line=number)
        seen[case.id] = number
        case._line = number
        cases.append(case)
    if not cases:
        raise DatasetError(f"{path}: the dataset has no cases (one JSON object per line expected)", path=path)
    return cases
