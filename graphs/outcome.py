"""What a run is and how it ends: its result and events, its locality policy, its outcome.

Kept apart from the runner (graphs/runner.py), which only drives runs, so that the backends,
approvals and routed runs share these types without importing the runner's machinery.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from flotilla.agents.agent import NeedsReview
from flotilla.agents.models.policy import RunPolicy
from flotilla.audit.errors import FlotillaError, InvalidInput
from flotilla.graphs.spec import WorkflowSpec
from flotilla.graphs.status import RunStatus
from flotilla.guardrails.base import GuardrailViolation

__all__ = [
    "RunResult", "RunEvent", "EventSink", "RunNotFound", "RunNotResumable",
    "decode_input", "run_policy", "select_output", "record_failure",
]

log = logging.getLogger("flotilla.graphs.runner")

Status_ = RunStatus  # the one status model: graphs/status.py


class RunNotFound(FlotillaError):
    code = "run_not_found"


class RunNotResumable(FlotillaError):
    code = "run_not_resumable"


@dataclass(frozen=True, slots=True)
class RunEvent:
    kind: Literal["started", "notice", "step", "approval", "finished"]
    """`approval`: the run paused for a person (data `{"approval": request}`); no `finished` follows until decided."""
    run_id: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class RunResult:
    run_id: str
    workflow: str
    status: Status_
    output: Any = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None
    notices: list[str] = field(default_factory=list)
    approval: dict[str, Any] | None = None
    """The request a `waiting_approval` run waits for (graphs/approval.py)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "workflow": self.workflow,
            "status": self.status,
            "output": self.output,
            "steps": self.steps,
            "error": self.error,
            "notices": self.notices,
            "approval": self.approval,
        }


EventSink = Callable[[RunEvent], Awaitable[None] | None]


def decode_input(data: str | bytes, limit: int) -> str:
    """The input as text, or InvalidInput saying what is wrong with it."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if len(raw) > limit:
        raise InvalidInput(f"input is {len(raw):,} bytes; the limit is {limit:,} (raise `input.max_bytes` in the workflow or FLOTILLA_MAX_INPUT_BYTES)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"input is not UTF-8 text (byte {exc.start} is 0x{raw[exc.start]:02x}); convert it to UTF-8 text first") from None
    if not text.strip():
        raise InvalidInput("input is empty; give the document text as a file or on stdin")
    return text


def run_policy(spec: WorkflowSpec, flag: bool, *, pii: bool) -> RunPolicy:
    reasons = [
        why
        for why, hit in (
            ("workflow setting", spec.settings.sensitivity == "confidential"),
            ("run flag", flag),
            ("input rail found PII", pii),
        )
        if hit
    ]
    return RunPolicy(
        confidential=bool(reasons),
        on_remote=spec.settings.on_remote,
        max_tokens=spec.settings.max_tokens,
        max_cost_usd=spec.settings.max_cost_usd,
        reason=", ".join(reasons),
    )

def select_output(spec: WorkflowSpec, values: dict[str, Any]) -> Any:
    outputs = values.get("outputs") or {}
    if spec.output is not None:
        return outputs.get(spec.output)
    steps = values.get("steps") or []
    return steps[-1]["output"] if steps else None

def record_failure(result: RunResult, exc: BaseException) -> None:
    if isinstance(exc, NeedsReview):  # every allowed tier failed: not a crash, not a success
        result.status, result.error = "needs_review", exc.to_dict()
        return
    if isinstance(exc, GuardrailViolation) or getattr(exc, "code", None) == "approval_rejected":  # a rail or a person said no
        result.status = "blocked"
    else:
        result.status = "failed"
    if isinstance(exc, FlotillaError):
        result.error = exc.to_dict()
    else:
        log.exception("run %s failed with an unexpected error", result.run_id, exc_info=exc)
        result.error = {"type": "InternalError", "code": "internal_error", "message": f"{type(exc).__name__}: {exc}"}
