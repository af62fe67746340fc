"""What every rail engine speaks: a check of one text at one point, giving a typed verdict."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from flotilla.audit.errors import FlotillaError

__all__ = ["RailPoint", "Verdict", "Rail", "GuardrailViolation", "own_messages", "current_own_messages"]


class RailPoint(StrEnum):
    """The five boundaries of a run where rails apply."""

    INPUT = "input"
    """The workflow's input, before any agent sees it."""
    AGENT_OUTPUT = "agent-output"
    """Each agent step's output."""
    TOOL_ARGS = "tool-args"
    """A tool call's arguments, before the call."""
    TOOL_RESULT = "tool-result"
    """A tool's result: untrusted text, screened for injected instructions."""
    OUTPUT = "output"
    """The workflow's final output."""


@dataclass(frozen=True, slots=True)
class Verdict:
    engine: str
    """e.g. `nemo`, `llama-guard`, `presidio`, `yara`, `injection-classifier`."""
    rule: str
    """The rule or flow that decided, e.g. `self_check_input`, `S1`, `sqli`."""
    allowed: bool
    latency_ms: float
    score: float | None = None
    detail: str = ""
    text: str | None = None
    """Replacement text when the rail transforms instead of blocking (redaction, quarantine)."""
    enabled: bool = True
    """False when the engine is configured off or has no weights: reported, never silently 'safe'."""
    attributes: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Rail(Protocol):
    """One engine. `check` must not raise on ordinary content; it returns a verdict."""

    name: str
    points: frozenset[RailPoint]

    async def check(self, text: str, *, point: RailPoint) -> Verdict: ...


class GuardrailViolation(FlotillaError):
    """A rail blocked the run: which engine, at which point, in which category, with what score
    against which threshold — enough to tune the rail (thresholds, allow-list) or fix the text."""

    code = "guardrail_violation"

    def __init__(self, verdict: Verdict, point: RailPoint) -> None:
        reason = verdict.detail or verdict.rule
        raw = verdict.attributes.get("raw") if verdict.rule == "unparseable" else None
        super().__init__(f"blocked at {point.value} by {verdict.engine} ({verdict.rule}): {reason}", quoted=raw)
        self.verdict = verdict
        self.point = point

    @property
    def engine(self) -> str:
        return self.verdict.engine

    @property
    def category(self) -> str:
        """The hazard category (content safety: S1…S14) or, for rule engines, the rule that fired."""
        return str(self.verdict.attributes.get("category") or self.verdict.rule)

    @property
    def score(self) -> float | None:
        return self.verdict.score

    @property
    def threshold(self) -> float | None:
        value = self.verdict.attributes.get("threshold")
        return None if value is None else float(value)

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {**super().to_dict(), "engine": self.engine, "rule": self.verdict.rule, "point": self.point.value,
                                  "category": self.category}
        if self.score is not None:
            record["score"] = round(self.score, 4)
        if self.threshold is not None:
            record["threshold"] = round(self.threshold, 4)
        return record


_own: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("flotilla_own_messages", default=())


@contextlib.contextmanager
def own_messages(messages: Iterable[str]) -> Iterator[None]:
    """Inside, these texts are flotilla's own messages (a failed step's error, say) wherever they
    appear in a checked text: redaction leaves them intact and still redacts around them.

    They never carry user content (that travels in `FlotillaError.quoted`), so nothing private
    hides in them; without this, Presidio reads "Invalid JSON" as a person's name."""
    token = _own.set(tuple(m for m in messages if m))
    try:
        yield
    finally:
        _own.reset(token)


def current_own_messages() -> tuple[str, ...]:
    return _own.get()
