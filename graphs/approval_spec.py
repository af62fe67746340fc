"""`approval:` in a workflow file: where a person must decide before the run goes on.

    agents:
      decide:
        ...
        approval:                      # or `approval: true` (always ask)
          when: decide.decision == 'approve' and extract.total > 10000
          timeout: 3d                  # s, m, h, d or w
          on_timeout: reject           # or escalate
          approvers: [alice, bob]      # who may decide (default: anyone who may approve)
          escalate_to: [carol]         # who may decide once it is escalated
    settings:
      approval_on_review: true         # a run that would end `needs_review` waits for a person

`when:` is a `verify:` expression (agents/expressions.py, simpleeval) over the outputs of the
steps so far, each under its step's name. Everything here is checked by `flotilla validate`
(a condition that does not parse or names an unknown step or field is a problem on its line);
graphs/approval.py does the asking and deciding.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from flotilla.agents.expressions import Expression, ExpressionError, unknown_fields

if TYPE_CHECKING:
    from flotilla.graphs.spec import WorkflowSpec

__all__ = ["ApprovalSpec", "Approval", "parse_duration", "approval_of", "check_approvals"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def parse_duration(text: str) -> float:
    """`30m`, `12h`, `3d` → seconds; ValueError saying how to write one."""
    match = _DURATION.match(str(text))
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a duration; write a positive number and a unit: 90s, 30m, 12h, 3d or 2w")
    return float(match.group(1)) * _UNITS[match.group(2)]


class ApprovalSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    when: str | None = None
    """Ask only when this expression over the step outputs is true (default: always ask)."""
    timeout: str | None = None
    """How long the approval may wait (`3d`); then `on_timeout` applies. Default: no limit."""
    on_timeout: Literal["reject", "escalate"] = "reject"
    """`reject`: the run ends `blocked` (code `approval_rejected`, approver `timeout`).
    `escalate`: it keeps waiting, now for `escalate_to` (anyone, if not given), with no deadline."""
    approvers: list[str] | None = Field(default=None, min_length=1)
    escalate_to: list[str] | None = Field(default=None, min_length=1)

    @field_validator("timeout")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    @field_validator("when")
    @classmethod
    def _parses(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                Expression.parse(value)
            except ExpressionError as exc:
                raise ValueError(str(exc)) from None
        return value

    @property
    def timeout_s(self) -> float | None:
        return parse_duration(self.timeout) if self.timeout else None


def _flag(value: Any) -> Any:
    """`approval: true` is an unconditional approval; `false` is none."""
    return {} if value is True else None if value is False else value


Approval = Annotated[ApprovalSpec | None, BeforeValidator(_flag)]
"""The type of an `approval:` field: `true`, `false`, or a mapping (ApprovalSpec)."""


def approval_of(value: ApprovalSpec | None) -> ApprovalSpec | None:
    return value


def check_approvals(spec: WorkflowSpec, schema_of: Callable[[str], dict[str, Any] | None]) -> list[tuple[str, tuple[Any, ...]]]:
    """(message, location) for each `approval:` that could not work: on a workflow kind without
    steps to pause after, or a `when:` naming a step or field that does not exist.
    `schema_of(step)`: the JSON schema of a step's output, None when it has none (tool nodes)."""
    problems: list[tuple[str, tuple[Any, ...]]] = []
    steps = set(spec.agents)
    for name, agent in spec.agents.items():
        approval = approval_of(agent.approval)
        if approval is None:
            continue
        if spec.kind != "workflow":
            problems.append((f"`approval:` pauses after a step of a `kind: workflow` graph; a {spec.kind} workflow cannot (use `settings.approval_on_review`)", ("agents", name, "approval")))
            continue
        if approval.escalate_to and approval.on_timeout != "escalate":
            problems.append(("`escalate_to:` needs `on_timeout: escalate`", ("agents", name, "approval", "escalate_to")))
        if approval.on_timeout == "escalate" and not approval.timeout:
            problems.append(("`on_timeout: escalate` needs a `timeout:` (e.g. 3d)", ("agents", name, "approval", "on_timeout")))
        if approval.when is None:
            continue
        where = ("agents", name, "approval", "when")
        for path in Expression.parse(approval.when).fields_used:
            step, rest = path[0], path[1:]
            if step not in steps:
                problems.append((f"approval.when: {approval.when!r} names {step!r}, which is not a step; write `step.field` (steps: {', '.join(sorted(steps))})", where))
                continue
            schema = schema_of(step)
            if rest and schema:
                for missing in unknown_fields([rest], schema):
                    problems.append((f"approval.when: {approval.when!r} names {step}.{missing}, which is not a field of {step}'s output schema", where))
    return problems
