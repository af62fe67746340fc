"""Per-field scorers: how close an agent's output value is to the labelled one, in [0, 1].

A dataset's `scorers.yaml` names a scorer per `agent.field`; fields it does not list are scored
by the expected value's JSON type (text for strings, numeric for numbers, F1 for lists, exact
for the rest). A custom scorer is any `package.module:function(expected, actual) -> float | bool`.
"""

from __future__ import annotations

import importlib
import json
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from flotilla.audit.errors import ConfigError

__all__ = ["Scorer", "ScorerSet", "load_scorers", "normalise_text", "SCORER_KINDS"]

ScoreFn = Callable[[Any, Any], float]


def normalise_text(value: Any) -> str:
    """Case, accents' composed forms, punctuation and spacing do not count as differences."""
    text = unicodedata.normalize("NFKC", str(value)).casefold()
    text = re.sub(r"[^\w\s]", " ", text)
    return " ".join(text.split())


def _exact(expected: Any, actual: Any) -> float:
    return float(expected == actual)


def _text(expected: Any, actual: Any) -> float:
    if expected is None or actual is None:
        return float(expected is None and actual is None)
    return float(normalise_text(expected) == normalise_text(actual))


def _enum(expected: Any, actual: Any) -> float:
    if expected is None or actual is None:
        return float(expected is None and actual is None)
    return float(str(expected).strip().casefold() == str(actual).strip().casefold())


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:  # a model may give "1,234.50" for a number field of a free-form schema
        return float(str(value).replace(",", "").strip())
    except ValueError:
        return None


def _numeric(tolerance: float = 0.01, relative: bool = False) -> ScoreFn:
    def score(expected: Any, actual: Any) -> float:
        if expected is None or actual is None:
            return float(expected is None and actual is None)
        want, got = _as_number(expected), _as_number(actual)
        if want is None or got is None or math.isnan(got):
            return 0.0
        allowed = tolerance * abs(want) if relative else tolerance
        return float(abs(want - got) <= allowed + 1e-9)

    return score


def _item_key(item: Any, key: tuple[str, ...]) -> str:
    if key and isinstance(item, Mapping):
        parts = []
        for name in key:
            value = item.get(name)
            number = _as_number(value) if not isinstance(value, str) else None
            parts.append(f"{number:.2f}" if number is not None else normalise_text(value) if value is not None else "")
        return "\x1f".join(parts)
    if isinstance(item, str):
        return normalise_text(item)
    return json.dumps(item, sort_keys=True)


def _f1(key: list[str] | None = None) -> ScoreFn:
    fields = tuple(key or ())

    def score(expected: Any, actual: Any) -> float:
        want = Counter(_item_key(i, fields) for i in (expected or []))
        got = Counter(_item_key(i, fields) for i in (actual or []) if isinstance(actual, list))
        if not want and not got:
            return 1.0
        hits = sum((want & got).values())
        if hits == 0:
            return 0.0
        precision, recall = hits / sum(got.values()), hits / sum(want.values())
        return 2 * precision * recall / (precision + recall)

    return score


def _custom(ref: str) -> ScoreFn:
    module_name, _, attr = ref.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"custom scorer {ref!r} does not resolve ({exc}); give `package.module:function`") from None
    if not callable(fn):
        raise ConfigError(f"custom scorer {ref!r} is not a function")

    def score(expected: Any, actual: Any) -> float:
        value = fn(expected, actual)
        return float(max(0.0, min(1.0, float(value))))

    return score


SCORER_KINDS: dict[str, Callable[..., ScoreFn]] = {
    "exact": lambda: _exact,
    "text": lambda: _text,
    "enum": lambda: _enum,
    "numeric": _numeric,
    "f1": _f1,
}


@dataclass(frozen=True)
class Scorer:
    kind: str
    fn: ScoreFn = field(repr=False)
    options: dict[str, Any] = field(default_factory=dict)

    def __call__(self, expected: Any, actual: Any) -> float:
        return self.fn(expected, actual)


def make_scorer(spec: Any, where: str) -> Scorer:
    """`text`, `{numeric: {tolerance: 0.01}}`, `{custom: pkg.mod:fn}` or `pkg.mod:fn`."""
    if isinstance(spec, str):
        if ":" in spec:
            return Scorer("custom", _custom(spec), {"ref": spec})
        kind, options = spec, {}
    elif isinstance(spec, Mapping) and len(spec) == 1:
        kind, options = next(iter(spec.items()))
        if kind == "custom":
            return Scorer("custom", _custom(str(options)), {"ref": options})
        options = options or {}
    else:
        raise ConfigError(f"{where}: a scorer is a name ({', '.join(SCORER_KINDS)}), `{{name: {{options}}}}` or `package.module:function`")
    if kind not in SCORER_KINDS:
        raise ConfigError(f"{where}: unknown scorer {kind!r}; scorers: {', '.join(SCORER_KINDS)}, custom")
    if not isinstance(options, Mapping):
        raise ConfigError(f"{where}: options of {kind!r} must be a mapping, e.g. `{{numeric: {{tolerance: 0.01}}}}`")
    try:
        return Scorer(kind, SCORER_KINDS[kind](**options), dict(options))
    except TypeError as exc:
        raise ConfigError(f"{where}: bad options for {kind!r}: {exc}") from None


def default_scorer(expected: Any) -> Scorer:
    """By the expected value's JSON type."""
    if isinstance(expected, bool) or expected is None or isinstance(expected, dict):
        return Scorer("exact", _exact)
    if isinstance(expected, (int, float)):
        return Scorer("numeric", _numeric(), {"tolerance": 0.01})
    if isinstance(expected, str):
        return Scorer("text", _text)
    return Scorer("f1", _f1())


class _ScorersFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    workflow: str | None = None
    fields: dict[str, Any] = {}


@dataclass
class ScorerSet:
    """The scorer of every `agent.field` a dataset labels."""

    by_field: dict[str, Scorer] = field(default_factory=dict)
    workflow: str | None = None
    source: Path | None = None

    def for_field(self, name: str, expected: Any) -> Scorer:
        return self.by_field.get(name) or default_scorer(expected)


def load_scorers(path: Path | None) -> ScorerSet:
    """`path`'s scorers, or an empty set (every field by its type) when there is no file."""
    if path is None or not path.is_file():
        return ScorerSet()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        parsed = _ScorersFile.model_validate(data)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: malformed YAML ({exc})") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{path}: {problems} (expected `workflow:` and `fields: {{agent.field: scorer}}`)") from None
    scorers = {}
    for name, spec in parsed.fields.items():
        if name.count(".") != 1:
            raise ConfigError(f"{path}: field {name!r} must be written `agent.field`")
        scorers[name] = make_scorer(spec, f"{path}: {name}")
    return ScorerSet(scorers, parsed.workflow, path)
