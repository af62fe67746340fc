"""Human approval: a run pauses for a person, who approves (maybe with edits) or rejects it.

Two places a run can wait (graphs/approval_spec.py says how a workflow declares them):

    step     `approval:` on a step: a gate node after it calls LangGraph `interrupt()` when its
             condition holds. The checkpoint holds the run; no process holds anything while it
             waits. Approve resumes the graph with `Command(resume=...)` (edits replace fields
             of the step's output, then the run goes on); the gate records the decision as a step.
    review   `settings.approval_on_review`: a run that would end `needs_review` with an output
             waits instead. Its graph has ended, so nothing is resumed: approve ends it
             `succeeded` (with the edits), reject ends it `blocked`.

Reject ends a run `blocked` with the typed error `approval_rejected` naming the approver and
the reason (there is no `rejected` status: graphs/status.py). A run waiting is `waiting_approval`
in the run store with its request in `runs.approval` (step, what the approver sees, deadline).
A decision is claimed with a compare-and-set, so a second one — or one on a run that is not
waiting — is RunNotWaiting and changes nothing. Each decision, escalation and timeout is an
`approval` record in the audit chain (who, when, what they saw, what they changed, why).

Timeouts are applied when someone looks: deciding, `flotilla runs list/show/expire`, or
`expire_due` from a server. `reject` ends the run (approver `timeout`); `escalate` keeps it
waiting, for `escalate_to`, with no further deadline.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from langgraph.types import Command, interrupt
from opentelemetry.trace import Tracer

from flotilla.agents.expressions import Expression, ExpressionError
from flotilla.audit.errors import ConfigError, FlotillaError, InvalidInput
from flotilla.audit.runs import RAW, RunRecord
from flotilla.graphs.approval_spec import ApprovalSpec, approval_of
from flotilla.graphs.backends.base import ApprovalForbidden, Decision, RunNotWaiting
from flotilla.graphs.tool_node import step_record

if TYPE_CHECKING:
    from flotilla.graphs.runner import EventSink, RunResult, WorkflowRunner
    from flotilla.graphs.spec import WorkflowSpec

__all__ = [
    "ApprovalRejected",
    "ApprovalPending",
    "gate_name",
    "approval_gate",
    "review_request",
    "stamp_request",
    "decide_run",
    "claimed_decision",
    "expire_if_due",
    "expire_due",
    "TIMEOUT_APPROVER",
    "PAST",
]

PAST = {"approve": "approved", "reject": "rejected"}

TIMEOUT_APPROVER = "timeout"
"""The approver named on a rejection by the `on_timeout: reject` policy."""


class ApprovalRejected(FlotillaError):
    """A person (or the timeout policy) rejected the run: it ends `blocked`."""

    code = "approval_rejected"


class ApprovalPending(Exception):
    """Internal carrier: the graph paused at an approval gate. Never leaves graphs/."""

    def __init__(self, request: dict[str, Any]) -> None:
        super().__init__(f"waiting for approval of {request.get('step')}")
        self.request = request


def _now() -> datetime:
    return datetime.now(UTC)


def gate_name(step: str) -> str:
    return f"{step}.approval"


def _request(gate: str, step: str, shows: Any, why: str, approval: ApprovalSpec) -> dict[str, Any]:
    return {
        "gate": gate,
        "step": step,
        "shows": shows,
        "why": why,
        "timeout_s": approval.timeout_s,
        "on_timeout": approval.on_timeout,
        "approvers": approval.approvers,
        "escalate_to": approval.escalate_to,
    }


def approval_gate(step: str, approval: ApprovalSpec, tracer: Tracer, *, workflow: str):
    """The node after `step`: asks when the condition holds, then applies the decision."""
    condition = Expression.parse(approval.when) if approval.when else None

    async def gate(state: dict[str, Any]) -> dict[str, Any]:
        outputs = state.get("outputs") or {}
        why = "the workflow asks for approval of this step"
        if condition is not None:
            try:
                if not condition.evaluate(outputs):
                    return {}
                why = f"condition holds: {condition.source}"
            except ExpressionError as exc:  # ask rather than guess
                why = f"condition {condition.source!r} could not be evaluated ({exc}); a person decides"
        shows = outputs.get(step)
        # Before the decision, interrupt() ends this node; on resume it returns the decision.
        answer = interrupt(_request("step", step, shows, why, approval))
        with tracer.start_as_current_span(f"approval {step}") as span:
            span.set_attributes(
                {
                    "flotilla.workflow": workflow,
                    "flotilla.approval.step": step,
                    "flotilla.approval.action": answer["action"],
                    "flotilla.approval.approver": answer["approver"],
                    "flotilla.approval.edited": sorted(answer.get("edit") or {}),
                }
            )
            output = {**shows, **answer["edit"]} if answer.get("edit") and isinstance(shows, dict) else shows
            record = decision_record(step, answer, output)
            if answer["action"] != "approve":
                from flotilla.graphs.compile import StepFailed

                error = rejection(step, answer)
                raise StepFailed(gate_name(step), {**record, "ok": False, "output": None, "error": error.to_dict()}, error)
        return {"outputs": {step: output}, "steps": [record]} if answer.get("edit") else {"steps": [record]}

    gate.__name__ = f"approval_{step}"
    return gate


def decision_record(step: str, answer: dict[str, Any], output: Any) -> dict[str, Any]:
    """The step record of a decision, in the run's steps like any other step."""
    notes = [f"{PAST[answer['action']]} by {answer['approver']}" + (f": {answer['reason']}" if answer.get("reason") else "")]
    if answer.get("edit"):
        notes.append(f"changed {', '.join(sorted(answer['edit']))}")
    record = step_record(gate_name(step), "approval", f"approval by {answer['approver']}", time.perf_counter(), output, notes)
    record["approval"] = {k: answer.get(k) for k in ("action", "approver", "reason", "edit", "decided_at")}
    return record


def rejection(step: str, answer: dict[str, Any]) -> ApprovalRejected:
    reason = answer.get("reason") or "no reason given"
    return ApprovalRejected(f"{answer['approver']} rejected the run at the approval of {step!r}: {reason}")


def review_request(spec: WorkflowSpec, result: RunResult) -> dict[str, Any] | None:
    """The approval a `needs_review` run waits for under `settings.approval_on_review`; None when
    there is nothing to approve (no output: a step failed on every tier)."""
    approval = approval_of(spec.settings.approval_on_review)
    if approval is None or result.output is None:
        return None
    outputs = {s["agent"]: s.get("output") for s in result.steps if s.get("ok")}
    if approval.when is not None:
        try:
            if not Expression.parse(approval.when).evaluate(outputs):
                return None
        except ExpressionError:
            pass  # ask rather than guess
    step = spec.output or (result.steps[-1]["agent"] if result.steps else spec.name)
    return _request("review", step, result.output, f"needs review: {(result.error or {}).get('message', '')}", approval)


def stamp_request(spec: WorkflowSpec, request: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
    """What the run store keeps: the request, when it was made, its deadline, and the workflow."""
    now = now or _now()
    timeout = request.get("timeout_s")
    builtin = spec.source is not None and spec.source.parent.name == "graphs" and spec.source.stem == spec.name
    return {
        **request,
        "workflow": spec.name,
        "workflow_source": None if spec.source is None or builtin else str(spec.source),
        "requested_at": now.isoformat(),
        "deadline": (now + timedelta(seconds=timeout)).isoformat() if timeout else None,
        "escalated": False,
    }


# -- deciding --------------------------------------------------------------------------------


async def decide_run(
    runner: WorkflowRunner, spec: WorkflowSpec, run_id: str, decision: Decision, *, on_event: EventSink | None = None, now: datetime | None = None
) -> RunResult:
    """`WorkflowRunner.decide`: RunNotFound, RunNotWaiting, ApprovalForbidden or InvalidInput
    before anything changes; else the run goes on (approve) or ends `blocked` (reject)."""
    if decision.action not in ("approve", "reject"):
        raise InvalidInput(f"a decision is `approve` or `reject`, not {decision.action!r}")
    if not decision.approver.strip():
        raise InvalidInput("name who decides (`--as NAME`, the approver)")
    record = await expire_if_due(runner, _record(runner, run_id), now=now)
    if record.status != "waiting_approval" or not record.approval:
        decided = (record.approval or {}).get("decision") or {}
        by = f" ({PAST.get(decided.get('action'), decided.get('action'))} by {decided.get('approver')} at {decided.get('decided_at')})" if decided else ""
        raise RunNotWaiting(f"run {run_id} is {record.status}, not waiting for approval{by}; nothing changed")
    request = record.approval
    allowed = request.get("approvers")
    if allowed and decision.approver not in allowed:
        raise ApprovalForbidden(f"{decision.approver!r} may not decide the approval of run {run_id}; its approvers: {', '.join(allowed)}")
    edit = dict(decision.edit or {}) if decision.action == "approve" else {}
    if edit:
        _check_edit(spec, request, edit)
    answer = {"action": decision.action, "approver": decision.approver, "reason": decision.reason, "edit": edit or None, "decided_at": (now or _now()).isoformat()}
    return await _apply(runner, spec, record, answer, on_event)


def _record(runner: WorkflowRunner, run_id: str) -> RunRecord:
    from flotilla.graphs.runner import RunNotFound

    record = runner.runs.get_run(run_id)
    if record is None:
        raise RunNotFound(f"no run {run_id!r}; `flotilla runs list` lists runs")
    return record


def _check_edit(spec: WorkflowSpec, request: dict[str, Any], edit: dict[str, Any]) -> None:
    """Edits name fields of the output awaiting approval, and leave it valid for its schema."""
    shows = request.get("shows")
    if not isinstance(shows, dict):
        raise InvalidInput(f"the output awaiting approval of {request['step']!r} has no fields to edit; approve or reject it as it is")
    unknown = sorted(set(edit) - set(shows))
    if unknown:
        raise InvalidInput(f"cannot edit {', '.join(unknown)}: not a field of {request['step']}'s output (fields: {', '.join(sorted(shows))})")
    node = spec.agents.get(request["step"])
    if node is not None and node.output_schema:
        from flotilla.agents.output import OutputMismatch
        from flotilla.graphs.build import load_output_schema

        schema = load_output_schema(node.output_schema, spec.base_dir)
        try:
            schema.parse(json.dumps({**shows, **edit}, ensure_ascii=False))
        except OutputMismatch as exc:
            raise InvalidInput(f"the edit leaves {request['step']}'s output invalid: {exc}") from None


async def _apply(runner: WorkflowRunner, spec: WorkflowSpec | None, record: RunRecord, answer: dict[str, Any], on_event: EventSink | None) -> RunResult:
    request = record.approval or {}
    run_id = record.run_id
    claimed = {**request, "decision": answer}
    won = await asyncio.to_thread(runner.runs.claim_approval, run_id, claimed, owner=getattr(runner, "owner", None))
    if not won:
        raise RunNotWaiting(f"run {run_id} was decided by someone else a moment ago; nothing changed")
    event = {"event": "decided", "step": request.get("step"), "requested_at": request.get("requested_at"), "why": request.get("why")}
    await asyncio.to_thread(runner.runs.record_approval, run_id, {**event, **answer}, request.get("shows"))
    if answer["action"] == "approve" and request.get("gate") == "step":
        assert spec is not None
        if spec.kind == "router":  # the run belongs to the workflow the router handed it to
            from flotilla.graphs.routed import routed_target

            spec = routed_target(spec, record)
        if spec.name != record.workflow and spec.name != request.get("workflow"):
            raise ConfigError(f"run {run_id} is a run of {request.get('workflow') or record.workflow}, not {spec.name}")
        data = record.input if record.content in (RAW, "full") else await runner._checkpointed_input(spec, record)
        return await runner._execute(
            spec, run_id, data, initiator=record.initiator, on_event=on_event, resume=True, command=Command(resume=answer)
        )
    return await _finish(runner, record, request, answer, on_event)


async def _finish(runner: WorkflowRunner, record: RunRecord, request: dict[str, Any], answer: dict[str, Any], on_event: EventSink | None) -> RunResult:
    """End a run without running anything more: any rejection, or approving a review."""
    from flotilla.graphs.runner import RunEvent, RunResult

    step = request.get("step", "")
    shows = request.get("shows")
    if answer["action"] == "approve":
        output = {**shows, **answer["edit"]} if answer.get("edit") and isinstance(shows, dict) else shows
        status, error = "succeeded", None
    else:
        output, status, error = None, "blocked", rejection(step, answer).to_dict()
    record_ = decision_record(step, answer, output)
    if error is not None:
        record_.update(ok=False, error=error)
    steps = [*record.steps, record_]
    result = RunResult(record.run_id, record.workflow, status, output, steps, error)  # type: ignore[arg-type]
    await asyncio.to_thread(runner.runs.finish_run, record.run_id, status, steps, output=output, error=error)
    await runner._open_checkpointer()
    await runner._forget_checkpoint(record.run_id)
    if on_event is not None:
        outcome = on_event(RunEvent("finished", record.run_id, {"status": status, "error": error}))
        if inspect.isawaitable(outcome):
            await outcome
    return result


async def claimed_decision(graph: Any, record: RunRecord) -> Command | None:
    """For `resume` (crash recovery): a decision claimed by a process that died before its graph
    took it — the checkpoint still waits at the gate — is applied, not asked for again."""
    decided = (record.approval or {}).get("decision")
    if not decided or (record.approval or {}).get("gate") != "step":
        return None
    state = await graph.aget_state({"configurable": {"thread_id": record.run_id}})
    return Command(resume=decided) if state.interrupts else None


# -- timeouts ----------------------------------------------------------------------------------


async def expire_if_due(runner: WorkflowRunner, record: RunRecord, *, now: datetime | None = None) -> RunRecord:
    """Apply the timeout policy to a waiting run whose deadline has passed; the record after it."""
    approval = record.approval or {}
    deadline = approval.get("deadline")
    now = now or _now()
    if record.status != "waiting_approval" or not deadline or now < datetime.fromisoformat(deadline):
        return record
    if approval.get("on_timeout") == "escalate" and not approval.get("escalated"):
        escalated = {**approval, "escalated": True, "escalated_at": now.isoformat(), "deadline": None, "approvers": approval.get("escalate_to")}
        if await asyncio.to_thread(runner.runs.update_approval, record.run_id, escalated):
            event = {"event": "escalated", "step": approval.get("step"), "deadline": deadline, "escalate_to": approval.get("escalate_to")}
            await asyncio.to_thread(runner.runs.record_approval, record.run_id, event, approval.get("shows"))
    else:
        answer = {"action": "reject", "approver": TIMEOUT_APPROVER, "reason": f"no decision by the deadline {deadline}", "edit": None, "decided_at": now.isoformat()}
        try:
            await _apply(runner, None, record, answer, None)
        except RunNotWaiting:
            pass  # someone decided meanwhile: their decision stands
    return _record(runner, record.run_id)


async def expire_due(runner: WorkflowRunner, *, now: datetime | None = None, limit: int = 10_000) -> list[tuple[str, str]]:
    """Apply every passed deadline (for `flotilla runs expire` and server start-up):
    (run_id, `rejected` or `escalated`) for each approval that timed out."""
    changed = []
    for record in runner.runs.recent(limit=limit, status="waiting_approval"):
        after = await expire_if_due(runner, record, now=now)
        if after.status != "waiting_approval":
            changed.append((record.run_id, "rejected"))
        elif (after.approval or {}).get("escalated") and not (record.approval or {}).get("escalated"):
            changed.append((record.run_id, "escalated"))
    return changed
