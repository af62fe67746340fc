"""The Temporal workflow every flotilla run executes on the `temporal` backend.

Deterministic orchestration only (it runs in Temporal's workflow sandbox and is replayed from
history): the LangGraph loop of the run's graph, whose nodes are activities (see
graphs/backends/temporal_worker.py), plus three bookkeeping activities that do what the local
runner does around the graph — `prepare_run` (run record, input checks, input rails),
`await_approval` / `record_decision` (a LangGraph `interrupt()` becomes `waiting_approval`), and
`finish_run` (output rails, the run record, the `invoke_workflow` span).

State in the workflow is the run's JSON state (input, outputs, steps): small payloads. LangGraph's
own checkpointer here is an `InMemorySaver`, rebuilt on replay — Temporal's history is the
durable record, as temporalio-langgraph prescribes for `interrupt()`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

with workflow.unsafe.imports_passed_through():
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.types import Command
    from temporalio.langgraph import graph as registered_graph

__all__ = ["RunRequest", "FlotillaRun", "WORKFLOW_TYPE", "STEP_FAILED", "DECIDE_UPDATE", "PROGRESS_QUERY", "versioned_queue"]

WORKFLOW_TYPE = "flotilla.run"
STEP_FAILED = "FlotillaStepFailed"
"""ApplicationError type a node activity raises for a failed step (not retried: the agent already
escalated through its tiers); details = (step record, run status, error dict)."""
DECIDE_UPDATE = "decide"
PROGRESS_QUERY = "progress"

# Bookkeeping activities write the run store and may load rail models the first time (minutes).
# They heartbeat (temporal_worker.py), so a task lost on its way to a worker — which an overloaded
# server does — is retried after the heartbeat timeout, not after the whole five minutes.
_BOOKKEEPING = {"start_to_close_timeout": timedelta(minutes=5), "heartbeat_timeout": timedelta(seconds=30), "retry_policy": RetryPolicy(maximum_attempts=5)}


@dataclass
class RunRequest:
    run_id: str
    workflow: str
    """The name the worker registered the workflow's graph under (its spec name)."""
    input: str
    initiator: str | None = None
    confidential: bool = False
    idempotency_key: str | None = None
    version: str | None = None
    """The workflow version (`WorkflowSpec.version()`) the run was submitted for."""


def versioned_queue(task_queue: str, workflow: str, version: str) -> str:
    """The Temporal task queue of one workflow version: a run and its activities only ever reach a
    worker that has this very definition (no replay of history against a changed graph)."""
    return f"{task_queue}@{workflow}-{version[:12]}"


@workflow.defn(name=WORKFLOW_TYPE)
class FlotillaRun:
    def __init__(self) -> None:
        self._status = "pending"
        self._steps: list[dict[str, Any]] = []
        self._approval: Any = None
        self._decision: dict[str, Any] | None = None

    @workflow.query(name=PROGRESS_QUERY)
    def progress(self) -> dict[str, Any]:
        """What `events` and `status` read while the run goes: status, steps so far, the approval asked for."""
        return {"status": self._status, "steps": self._steps, "approval": self._approval}

    @workflow.update(name=DECIDE_UPDATE)
    async def decide(self, decision: dict[str, Any]) -> str:
        self._decision = decision
        return "accepted"

    @decide.validator
    def _only_while_waiting(self, decision: dict[str, Any]) -> None:
        # Rejected updates never enter history: a second or late decision changes nothing.
        if self._status != "waiting_approval" or self._decision is not None:
            raise ValueError(f"run is {self._status}, not waiting for approval")

    @workflow.run
    async def run(self, request: RunRequest) -> dict[str, Any]:
        self._status = "running"
        prepared = await workflow.execute_activity("flotilla.prepare_run", request, **_BOOKKEEPING)
        if prepared.get("result") is not None:  # bad input or blocked by an input rail: already recorded
            self._status = prepared["result"]["status"]
            return prepared["result"]
        failure: dict[str, Any] | None = None
        final: dict[str, Any] = {}
        try:
            final, failure = await self._run_graph(request, prepared)
        except asyncio.CancelledError:
            failure = {"status": "cancelled", "error": {"type": "Cancelled", "code": "cancelled", "message": "the run was cancelled before it finished"}}
        finish = {"run_id": request.run_id, "workflow": request.workflow, "final": final, "steps": self._steps, "failure": failure,
                  "notices": prepared.get("notices", []), "confidential": prepared.get("confidential", False),
                  "started_ns": int(workflow.info().start_time.timestamp() * 1e9), "initiator": request.initiator}
        # Started after a cancellation was delivered, this activity still runs: the outcome is recorded.
        result = await workflow.execute_activity("flotilla.finish_run", finish, **_BOOKKEEPING)
        self._status = result["status"]
        return result

    async def _run_graph(self, request: RunRequest, prepared: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
        app = registered_graph(request.workflow).compile(checkpointer=InMemorySaver(), name=request.workflow)
        config = {"configurable": {"thread_id": request.run_id}, "recursion_limit": prepared["max_steps"]}
        payload: Any = prepared["start"]
        final: dict[str, Any] = {}
        while True:
            asked: Any = None
            try:
                async for mode, chunk in app.astream(payload, config, stream_mode=["updates", "values"]):
                    if mode == "values":
                        final = chunk
                        continue
                    for key, update in chunk.items():
                        if key == "__interrupt__":
                            asked = [getattr(i, "value", i) for i in update]
                        elif isinstance(update, dict):
                            self._steps.extend(update.get("steps", []))
            except ActivityError as exc:
                return final, self._failure(exc)
            if asked is None:
                return final, None
            payload = Command(resume=await self._wait_for_decision(request, asked[0] if len(asked) == 1 else {"step": None, "shows": asked}))

    async def _wait_for_decision(self, request: RunRequest, approval: Any) -> dict[str, Any]:
        """The run pauses (no worker busy, nothing billed) until an approver's `decide` update, or
        its timeout (graphs/approval.py's request: `timeout_s`, `on_timeout` reject or escalate)."""
        waiting = {"run_id": request.run_id, "workflow": request.workflow, "approval": approval, "steps": self._steps}
        approval = await workflow.execute_activity("flotilla.await_approval", waiting, **_BOOKKEEPING)
        # Only now, with the run store saying so too, may an approver decide.
        self._status, self._approval = "waiting_approval", approval
        timeout = approval.get("timeout_s")
        try:
            await workflow.wait_condition(lambda: self._decision is not None, timeout=timedelta(seconds=timeout) if timeout else None)
        except asyncio.TimeoutError:
            if approval.get("on_timeout") == "escalate":  # keeps waiting, for the escalation approvers, without a deadline
                await workflow.wait_condition(lambda: self._decision is not None)
            else:
                self._decision = {"action": "reject", "approver": "timeout", "reason": f"no decision within {timeout:g} s", "edit": None,
                                  "decided_at": workflow.now().isoformat()}
        decision, self._decision = self._decision, None
        self._status, self._approval = "running", None
        await workflow.execute_activity("flotilla.record_decision", {"run_id": request.run_id, "decision": decision, "approval": approval}, **_BOOKKEEPING)
        return decision

    @staticmethod
    def _failure(exc: ActivityError) -> dict[str, Any]:
        cause = exc.cause
        if isinstance(cause, CancelledError):
            raise asyncio.CancelledError from exc
        if isinstance(cause, ApplicationError) and cause.type == STEP_FAILED and len(cause.details) == 3:
            record, status, error = cause.details
            return {"record": record, "status": status, "error": error}
        message = str(cause or exc)
        return {"status": "failed", "error": {"type": "ActivityFailed", "code": "internal_error", "message": f"a step's activity failed after its retries: {message}"}}
