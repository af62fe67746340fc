"""Tiers: an agent's ordered models, and what happens when every one of them fails.

    model: [specialist-extract, specialist-extract-large, frontier]

The first tier answers; an answer that fails validation after its repair, fails
verification, or whose call fails goes to the next tier with the failure shown to it. In a
confidential run every non-local tier is skipped (and recorded as skipped): the cascade never
asks the guard to refuse. When no tier gives an answer that passes, the step raises
`NeedsReview` and the run ends `needs_review` at that step, its attempts and reasons kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flotilla.agents.models.base import ModelError
from flotilla.agents.models.policy import current_policy
from flotilla.agents.models.registry import Binding

__all__ = ["Attempt", "NeedsReview", "skip_reason", "escalation_message"]


@dataclass(slots=True)
class Attempt:
    """One tier's try at a step, as the step record keeps it."""

    model: str
    """The tier's model alias."""
    ok: bool
    reasons: list[str] = field(default_factory=list)
    skipped: bool = False

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {"model": self.model, "ok": self.ok, "reasons": list(self.reasons)}
        if self.skipped:
            record["skipped"] = True
        return record


class NeedsReview(ModelError):
    """No tier of an agent gave an answer that passed validation and verification.

    Not a crash: the run ends `needs_review` at this step (graphs/status.py). A ModelError, so
    callers that fall back on a model failure (the research lead) fall back on this too."""

    code = "needs_review"

    def __init__(self, step: str, attempts: list[Attempt], *, quoted: str | None = None) -> None:
        tried = [a for a in attempts if not a.skipped]
        last = next((a for a in reversed(tried) if a.reasons), None)
        why = "; ".join(last.reasons) if last else "no tier could be tried"
        super().__init__(
            f"agent {step!r}: no answer passed on {len(tried)} of {len(attempts)} tier(s); last: {why}", quoted=quoted
        )
        self.step, self.attempts = step, attempts

    @property
    def reasons(self) -> list[str]:
        return [f"{a.model}: {r}" for a in self.attempts for r in a.reasons]

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = dict(super().to_dict())
        record["step"] = self.step
        record["attempts"] = [a.to_dict() for a in self.attempts]
        record["reasons"] = [{"step": self.step, "reason": r} for r in self.reasons]
        return record


def skip_reason(tier: Binding, *, only_tier: bool) -> str | None:
    """Why the cascade skips this tier now, or None. A lone tier is never skipped: the guard in
    the client layer refuses or reroutes it, as it always has."""
    policy = current_policy()
    if policy.confidential and not tier.local and not only_tier:
        because = f" ({policy.reason})" if policy.reason else ""
        return f"skipped: {tier.alias!r} is not local and this run is confidential{because}"
    return None


def escalation_message(reasons: list[str]) -> dict[str, str]:
    """What the next tier is told about the answer before it (the failure, not the answer)."""
    listed = "\n".join(f"- {r}" for r in reasons)
    return {
        "role": "user",
        "content": f"An earlier answer to this task was rejected:\n{listed}\nAnswer again, avoiding these problems. Valid JSON only.",
    }
