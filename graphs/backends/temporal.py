"""The `temporal` run backend: runs are Temporal workflows that `flotilla worker`s execute.

- submit: starts workflow `flotilla.run` with workflow id = run id, on the task queue of the
  workflow's version (`versioned_queue`: only a worker with that definition runs it). An idempotency key gives a
  deterministic run id (a hash of the key) and Temporal refuses a second workflow with that id
  (`REJECT_DUPLICATE` for closed ones, `USE_EXISTING` for a running one): one key, one run.
- status: the run store, which workers write exactly as the local runner does; before a worker
  has picked the run up, Temporal's description (`pending`; with the reason when no worker polls
  the version's queue, from Temporal's DescribeTaskQueue).
- events: the workflow's `progress` query (steps so far, the approval asked for), then its result.
- decide: the workflow's `decide` update; its validator refuses a run not waiting (RunNotWaiting).
- cancel: Temporal cancellation; the workflow still records the run as `cancelled`.
A server that does not answer → BackendUnavailable with the address and what to do.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any

from flotilla.audit.errors import InvalidInput
from flotilla.audit.runs import RunRecord, RunStore
from flotilla.graphs.backends.base import ApprovalForbidden, BackendUnavailable, Decision, RunNotFound, RunNotWaiting, Submission
from flotilla.graphs.backends.temporal_workflow import DECIDE_UPDATE, PROGRESS_QUERY, WORKFLOW_TYPE, RunRequest, versioned_queue
from flotilla.graphs.runner import RunEvent

if TYPE_CHECKING:
    from temporalio.client import Client, WorkflowHandle

    from flotilla.graphs.spec import WorkflowSpec
    from flotilla.runtime.settings_temporal import TemporalSettings

__all__ = ["TemporalBackend", "run_id_for_key", "MAX_INPUT_PAYLOAD"]

MAX_INPUT_PAYLOAD = 1_500_000
"""Temporal refuses payloads over ~2 MB: inputs are sent by value up to this size."""
POLL_S = 0.1
UNSERVED_POLL_S = 1.0
"""How often `events` looks again for a worker of a run's version while none serves it."""


def run_id_for_key(idempotency_key: str) -> str:
    """The run id an idempotency key always maps to (workflow id = run id)."""
    return hashlib.sha256(f"flotilla-idempotency:{idempotency_key}".encode()).hexdigest()[:32]


class TemporalBackend:
    name = "temporal"

    def __init__(
        self, options: TemporalSettings, runs: RunStore, *, client: Client | None = None, workflows: Mapping[str, str] | None = None,
        resolve: Callable[[str], WorkflowSpec] | None = None,
    ) -> None:
        self.options = options
        self.workflows = workflows
        """Registered Python workflows (settings.workflows), to find a run's workflow by name."""
        self.resolve = resolve
        """How `submit` finds a workflow: `flotilla serve` passes names only (local.named_workflows),
        so a caller over HTTP cannot make it read a file; None (the CLI): a name or a YAML path."""
        self.runs = runs
        """The run store the workers write (shared database): status reads it."""
        self._client = client

    async def client(self) -> Client:
        if self._client is None:
            from temporalio.client import Client

            try:
                self._client = await asyncio.wait_for(
                    Client.connect(self.options.address, namespace=self.options.namespace), self.options.connect_timeout_s
                )
            except Exception as exc:  # noqa: BLE001 — refused, timed out, bad address: all mean "not now"
                raise self._unavailable(exc) from None
        return self._client

    def _unavailable(self, exc: BaseException) -> BackendUnavailable:
        reason = str(exc) or type(exc).__name__
        return BackendUnavailable(
            f"the Temporal server at {self.options.address} (namespace {self.options.namespace!r}) is not reachable: {reason}; "
            "start it (`temporal server start-dev`) or set `temporal: {address: …}` in flotilla.yaml; nothing was submitted"
        )

    async def health(self) -> str | None:
        """None when the server answers, else the reason (for `/healthz`)."""
        try:
            client = await self.client()
            await asyncio.wait_for(client.service_client.check_health(), self.options.connect_timeout_s)
        except BackendUnavailable as exc:
            return exc.message
        except Exception as exc:  # noqa: BLE001
            return self._unavailable(exc).message
        return None

    async def submit(self, submission: Submission) -> str:
        from temporalio.exceptions import WorkflowAlreadyStartedError
        from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

        if len(submission.input.encode("utf-8")) > MAX_INPUT_PAYLOAD:
            raise InvalidInput(f"input is over {MAX_INPUT_PAYLOAD:,} bytes, more than the temporal backend sends by value; use the local backend or a smaller input")
        key = submission.idempotency_key
        run_id = submission.run_id or (run_id_for_key(key) if key else uuid.uuid4().hex)
        spec = await asyncio.to_thread(self._spec, submission.workflow)
        request = RunRequest(run_id, spec.name, submission.input, submission.initiator, submission.confidential, key, spec.version())
        client = await self.client()
        try:
            await client.start_workflow(
                WORKFLOW_TYPE,
                request,
                id=run_id,
                task_queue=versioned_queue(self.options.task_queue, spec.name, spec.version()),
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                memo={"workflow": request.workflow, "version": request.version},
                static_summary=f"flotilla run of {request.workflow}",
            )
        except WorkflowAlreadyStartedError:  # the key's run already finished: it is the answer
            pass
        except Exception as exc:  # noqa: BLE001
            raise self._unavailable(exc) from None
        return run_id

    async def _describe(self, run_id: str) -> tuple[WorkflowHandle, Any]:
        from temporalio.service import RPCError, RPCStatusCode

        handle = (await self.client()).get_workflow_handle(run_id)
        try:
            return handle, await handle.describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise RunNotFound(f"no run {run_id!r} on the temporal backend (namespace {self.options.namespace!r})") from None
            raise self._unavailable(exc) from None

    async def status(self, run_id: str) -> RunRecord:
        record = await asyncio.to_thread(self.runs.get_run, run_id)
        if record is not None:
            return record
        _, description = await self._describe(run_id)  # submitted, no worker has started it yet
        memo = await description.memo()
        why = await self._unserved(description, memo)
        error = {"type": "NoCompatibleWorker", "code": "no_compatible_worker", "message": why} if why else None
        return RunRecord(run_id, str(memo.get("workflow", "")), str(memo.get("version") or ""), "pending", None, None, error, [], None, description.start_time, None)

    async def _unserved(self, description: Any, memo: Mapping[str, Any]) -> str | None:
        """Why a submitted run is not picked up: no worker polls its version's task queue."""
        from temporalio.api.enums.v1 import TaskQueueType
        from temporalio.api.taskqueue.v1 import TaskQueue
        from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
        from temporalio.client import WorkflowExecutionStatus

        if description.status != WorkflowExecutionStatus.RUNNING:
            return None
        client = await self.client()
        request = DescribeTaskQueueRequest(namespace=self.options.namespace, task_queue=TaskQueue(name=description.task_queue), task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW)
        try:
            pollers = (await client.workflow_service.describe_task_queue(request)).pollers
        except Exception as exc:  # noqa: BLE001
            raise self._unavailable(exc) from None
        if pollers:
            return None
        workflow, version = memo.get("workflow", "?"), memo.get("version") or "?"
        return (f"no worker serves workflow {workflow} version {version} (task queue {description.task_queue}); the run waits for one: "
                "start `flotilla worker --workflow` with that workflow file (a changed file is another version)")

    async def events(self, run_id: str) -> AsyncIterator[RunEvent]:
        from temporalio.client import WorkflowExecutionStatus, WorkflowQueryFailedError, WorkflowQueryRejectedError
        from temporalio.service import RPCError

        handle, description = await self._describe(run_id)
        memo = await description.memo()
        yield RunEvent("started", run_id, {"workflow": memo.get("workflow"), "backend": self.name})
        told = False  # a run no worker serves waits (a query would too): say why once, then look again
        while await asyncio.to_thread(self.runs.get_run, run_id) is None and (why := await self._unserved(description, memo)):
            if not told:
                yield RunEvent("notice", run_id, {"message": why, "code": "no_compatible_worker"})
                told = True
            await asyncio.sleep(UNSERVED_POLL_S)
            description = await handle.describe()
        sent = 0
        while True:
            if description.status != WorkflowExecutionStatus.RUNNING:
                result = await self._result(handle)
                for step in result.get("steps", [])[sent:]:
                    yield RunEvent("step", run_id, step)
                for notice in result.get("notices", []):
                    yield RunEvent("notice", run_id, {"message": notice})
                yield RunEvent("finished", run_id, {"status": result.get("status"), "error": result.get("error")})
                return
            try:
                progress = await handle.query(PROGRESS_QUERY)
            except (RPCError, WorkflowQueryFailedError, WorkflowQueryRejectedError):  # closing, or a worker busy: look again
                await asyncio.sleep(POLL_S)
                description = await handle.describe()
                continue
            for step in progress["steps"][sent:]:
                yield RunEvent("step", run_id, step)
            sent = len(progress["steps"])
            if progress["status"] == "waiting_approval":
                yield RunEvent("approval", run_id, {"approval": progress["approval"]})  # type: ignore[arg-type]
                return
            await asyncio.sleep(POLL_S)
            description = await handle.describe()

    async def _result(self, handle: WorkflowHandle) -> dict[str, Any]:
        from temporalio.client import WorkflowFailureError

        try:
            return await handle.result()
        except WorkflowFailureError as exc:  # terminated, timed out, or cancelled before recording
            record = await asyncio.to_thread(self.runs.get_run, handle.id)
            if record is not None:
                return {"status": record.status, "steps": record.steps, "error": record.error, "output": record.output}
            return {"status": "failed", "steps": [], "error": {"type": "WorkflowFailed", "code": "internal_error", "message": str(exc.cause or exc)}}

    async def wait(self, run_id: str) -> dict[str, Any]:
        """The run's result (RunResult.to_dict()) once it finishes."""
        handle, _ = await self._describe(run_id)
        return await self._result(handle)

    async def decide(self, run_id: str, decision: Decision) -> RunRecord:
        from temporalio.client import WorkflowUpdateFailedError
        from temporalio.service import RPCError

        answer = await self._answer(run_id, decision)
        handle, _ = await self._describe(run_id)
        try:
            await handle.execute_update(DECIDE_UPDATE, answer)
        except WorkflowUpdateFailedError as exc:
            raise RunNotWaiting(f"run {run_id} is not waiting for approval ({exc.cause or exc}); nothing changed") from None
        except RPCError as exc:  # a closed workflow takes no update
            raise RunNotWaiting(f"run {run_id} is not waiting for approval ({exc.message}); nothing changed") from None
        record = await self.status(run_id)
        # The worker records the decision a moment later; the run resumed when the update returned.
        return dataclasses.replace(record, status="running") if record.status == "waiting_approval" else record

    async def _answer(self, run_id: str, decision: Decision) -> dict[str, Any]:
        """The checks graphs/approval.py makes before anything changes, and its answer format."""
        from datetime import UTC, datetime

        if decision.action not in ("approve", "reject"):
            raise InvalidInput(f"a decision is `approve` or `reject`, not {decision.action!r}")
        if not decision.approver.strip():
            raise InvalidInput("name who decides (`--as NAME`, the approver)")
        record = await self.status(run_id)
        request = record.approval or {}
        if record.status != "waiting_approval" or not request:
            raise RunNotWaiting(f"run {run_id} is {record.status}, not waiting for approval; nothing changed")
        allowed = request.get("approvers")
        if allowed and decision.approver not in allowed:
            raise ApprovalForbidden(f"{decision.approver!r} may not decide the approval of run {run_id}; its approvers: {', '.join(allowed)}")
        edit = dict(decision.edit or {}) if decision.action == "approve" else {}
        if edit:
            self._check_edit(record, request, edit)
        return {"action": decision.action, "approver": decision.approver, "reason": decision.reason, "edit": edit or None, "decided_at": datetime.now(UTC).isoformat()}

    def _check_edit(self, record: RunRecord, request: dict[str, Any], edit: dict[str, Any]) -> None:
        from flotilla.audit.errors import FlotillaError
        from flotilla.graphs.approval import _check_edit
        from flotilla.graphs.catalog import load_workflow

        shows = request.get("shows")
        unknown = sorted(set(edit) - set(shows)) if isinstance(shows, dict) else sorted(edit)
        if unknown:
            raise InvalidInput(f"cannot edit {', '.join(unknown)}: not a field of {request.get('step')}'s output awaiting approval")
        try:  # the edited output must still fit the step's schema (when this process can load the workflow)
            spec = load_workflow(request.get("workflow_source") or record.workflow, self.workflows)
        except FlotillaError:
            return
        _check_edit(spec, request, edit)

    async def cancel(self, run_id: str) -> RunRecord:
        from temporalio.client import WorkflowExecutionStatus

        handle, description = await self._describe(run_id)
        if description.status != WorkflowExecutionStatus.RUNNING:
            record = await self.status(run_id)
            raise RunNotWaiting(f"run {run_id} already finished ({record.status}); there is nothing to cancel")
        await handle.cancel()
        try:  # the workflow records `cancelled` in its finish activity: wait briefly for it
            await asyncio.wait_for(self._result(handle), self.options.connect_timeout_s * 2)
        except TimeoutError:
            pass
        return await self.status(run_id)

    def _spec(self, workflow: str) -> WorkflowSpec:
        """The workflow as this process loads it (a name, or a YAML file for the CLI): its version picks the queue."""
        from flotilla.graphs.catalog import load_workflow

        return self.resolve(workflow) if self.resolve is not None else load_workflow(workflow, self.workflows)

    async def aclose(self) -> None:
        self._client = None  # the client holds no resources the process must release
