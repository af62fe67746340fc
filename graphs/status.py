"""One status model for every run, whatever the workflow (YAML, research or Python).

    succeeded         a person would accept the output
    needs_review      the run finished, but part of the work failed in a way a person must look at;
                      nothing is pretended: the output is kept and `error.reasons` names each
                      failing step and why
    waiting_approval  paused for a person (LangGraph `interrupt()`)
    blocked           a rail said no
    failed            an error ended the run (a typed error, or an unexpected exception)
    cancelled         stopped before it finished (Ctrl-C, an MCP client's cancellation)

How a run gets `needs_review`: any node may add `{"step": ..., "reason": ...}` items to the
state's `review` list (a LangGraph reducer appends them); a run whose final state has any is
`needs_review`, not `succeeded`. An exception is never `needs_review`: it is `failed` (or
`blocked` for a rail).
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

__all__ = ["RunStatus", "RUN_STATUSES", "FINISHED", "ReviewReason", "review_error"]

RunStatus = Literal["succeeded", "needs_review", "waiting_approval", "blocked", "failed", "cancelled"]
RUN_STATUSES: tuple[RunStatus, ...] = ("succeeded", "needs_review", "waiting_approval", "blocked", "failed", "cancelled")

FINISHED: frozenset[str] = frozenset({"succeeded", "needs_review"})
"""Runs whose graph ran to the end: `resume` has nothing left to do."""


class ReviewReason(TypedDict):
    step: str
    """The agent or stage that failed (`planner`, `ledger/q2`, `research`, …)."""
    reason: str


def review_error(reasons: list[ReviewReason]) -> dict[str, Any]:
    """The record a `needs_review` run keeps in its `error` slot: what to look at, and why."""
    return {
        "type": "NeedsReview",
        "code": "needs_review",
        "message": "; ".join(f"{r['step']}: {r['reason']}" for r in reasons),
        "reasons": [dict(r) for r in reasons],
    }
