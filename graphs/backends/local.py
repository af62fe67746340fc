"""The `local` backend: runs execute as asyncio tasks of this process, on the WorkflowRunner.

The runner's checkpointer is its own business (SQLite by default, Postgres for the `postgres`
backend): this class only starts, follows, decides and cancels runs. Events fan out in process:
each run keeps the events it emitted, so a follower who arrives late gets them replayed and then
the live ones; a run this process is not running (finished earlier, started by another process)
is replayed from its record in the run store.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections import OrderedDict
from datetime import UTC, datetime
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from flotilla.audit.errors import ConfigError
from flotilla.audit.runs import RunRecord
from flotilla.graphs.backends.base import Decision, RunNotWaiting, Submission
from flotilla.graphs.runner import RunEvent, RunNotFound, WorkflowRunner
from flotilla.graphs.spec import WorkflowSpec

__all__ = ["LocalBackend", "named_workflows", "WorkflowResolver", "TERMINAL_EVENTS"]

log = logging.getLogger(__name__)

WorkflowResolver = Callable[[str], WorkflowSpec]
"""A workflow name → its spec, or a ConfigError saying which names exist."""

TERMINAL_EVENTS = frozenset({"finished", "approval"})
"""A follower's stream ends at the run's end, or when it stops to wait for a person."""

KEEP_FINISHED = 1000
"""Event logs of finished runs kept in memory for late followers (older ones replay from the store)."""


def named_workflows(registered: Mapping[str, str] | None = None) -> WorkflowResolver:
    """Resolve built-in and registered workflow names only — never a file path: a caller over
    HTTP must not make the server read files of its choosing. Loaded once per process, as the
    MCP gateway does (a lookup costs ~100 ms: entry points scanned, YAML parsed and checked)."""
    from flotilla.graphs.catalog import list_workflows, load_workflow

    known: list[str] = []
    loaded: dict[str, WorkflowSpec] = {}

    def resolve(name: str) -> WorkflowSpec:
        if not known:
            known.extend(list_workflows(registered, python=True))
        if name not in known:
            raise ConfigError(f"no workflow named {name!r}; known workflows: {', '.join(known)}")
        if name not in loaded:
            loaded[name] = load_workflow(name, registered)
        return loaded[name]

    return resolve


class _EventLog:
    """One run's events so far; followers replay them, then wait for more."""

    def __init__(self, seed: list[RunEvent] | None = None) -> None:
        self.events: list[RunEvent] = list(seed or [])
        self.closed = False
        self._changed = asyncio.Condition()

    async def publish(self, event: RunEvent) -> None:
        async with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    async def close(self) -> None:
        async with self._changed:
            self.closed = True
            self._changed.notify_all()

    async def follow(self) -> AsyncIterator[RunEvent]:
        seen = 0
        while True:
            async with self._changed:
                await self._changed.wait_for(lambda: seen < len(self.events) or self.closed)
                batch, closed = self.events[seen:], self.closed
            for event in batch:
                seen += 1
                yield event
                if event.kind in TERMINAL_EVENTS:
                    return
            if closed and seen >= len(self.events):
                return


def replay(record: RunRecord) -> list[RunEvent]:
    """A run's events as its record tells them (a run this process is not running)."""
    events = [RunEvent("started", record.run_id, {"workflow": record.workflow, "replayed": True})]
    events += [RunEvent("step", record.run_id, dict(step)) for step in record.steps]
    approval = getattr(record, "approval", None)
    if record.status == "waiting_approval":
        events.append(RunEvent("approval", record.run_id, {"approval": approval}))  # as the runner emits it
    elif record.status not in ("running", "pending"):  # ended: finished, cancelled, interrupted
        events.append(RunEvent("finished", record.run_id, {"status": record.status, "error": record.error}))
    return events


class LocalBackend:
    """RunBackend (graphs/backends/base.py) over an in-process WorkflowRunner."""

    name = "local"

    def __init__(self, runner: WorkflowRunner, workflows: WorkflowResolver, *, max_concurrent: int = 32) -> None:
        """`max_concurrent`: runs going at once; later submissions wait their turn as `pending`
        (a thousand submits must not become a thousand LangGraph runs fighting for one loop)."""
        self.runner = runner
        self.workflows = workflows
        self._slots = asyncio.Semaphore(max_concurrent)
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._logs: OrderedDict[str, _EventLog] = OrderedDict()
        self._deciding: set[str] = set()
        self._accepted: dict[str, RunRecord] = {}  # submitted, their row not written yet: `pending`, not unknown

    # -- the interface -------------------------------------------------------------------------

    async def submit(self, submission: Submission) -> str:
        spec = self.workflows(submission.workflow)
        self.runner.decode_input(submission.input, spec)  # bad input: InvalidInput now, not a failed run later
        run_id = submission.run_id or uuid.uuid4().hex
        if submission.idempotency_key:
            holder = await asyncio.to_thread(
                functools.partial(self.runner.runs.claim_run, owner=self.runner.owner),
                run_id, spec.name, spec.version(), submission.idempotency_key, submission.initiator,
            )
            if holder != run_id:  # an earlier submit with this key started it
                return holder
            try:
                return self._submit(run_id, spec, submission)
            except Exception as exc:  # the key is claimed: its row says what became of the run, never `pending` forever
                error = {"type": type(exc).__name__, "code": "not_started", "message": f"the run was accepted but could not start ({exc!r}); submit it again with a new idempotency key"}
                await asyncio.to_thread(self.runner.runs.fail_unstarted, run_id, self.runner.owner, error)
                raise
        return self._submit(run_id, spec, submission)

    def _submit(self, run_id: str, spec: WorkflowSpec, submission: Submission) -> str:
        events = self._new_log(run_id)
        self._accepted[run_id] = RunRecord(
            run_id, spec.name, spec.version(), "pending", None, None, None, [], submission.initiator, datetime.now(UTC), None
        )
        run = self.runner.run(
            spec, submission.input, run_id=run_id, initiator=submission.initiator, on_event=events.publish, confidential=submission.confidential
        )

        def cancelled_in_queue() -> None:  # the 202 promised a run: its record says what became of it
            if self.runner.stopping:  # the server stops: kept (input and all) for the next one to start
                self.runner.runs.start_run(run_id, spec.name, spec.version(), submission.input, submission.initiator, owner=self.runner.owner)
                error = {"type": "Interrupted", "code": "interrupted", "message": "the server stopped before the run started; the next one to start runs it"}
                self.runner.runs.interrupt_run(run_id, error)
                return
            self.runner.runs.start_run(run_id, spec.name, spec.version(), submission.input, submission.initiator)
            error = {"type": "Cancelled", "code": "cancelled", "message": "the run was cancelled before it started"}
            self.runner.runs.finish_run(run_id, "cancelled", [], error=error)

        self._start(run_id, run, events, queued=cancelled_in_queue)
        return run_id

    async def status(self, run_id: str) -> RunRecord:
        record = await asyncio.to_thread(self.runner.runs.get_run, run_id) or self._accepted.get(run_id)
        if record is None:
            raise RunNotFound(f"no run {run_id!r}")
        return record

    async def events(self, run_id: str) -> AsyncIterator[RunEvent]:
        events = self._logs.get(run_id)
        if events is None:
            for event in replay(await self.status(run_id)):
                yield event
            return
        async for event in events.follow():
            yield event

    async def decide(self, run_id: str, decision: Decision) -> RunRecord:
        record = await self.status(run_id)
        if record.status != "waiting_approval" or run_id in self._deciding:
            raise RunNotWaiting(f"run {run_id} is {record.status}, not waiting for approval; nothing was changed")
        spec = self._spec_of(record)
        previous = self._logs.get(run_id)
        seed = [e for e in previous.events if e.kind not in TERMINAL_EVENTS] if previous else replay(record)[:-1]
        events = self._new_log(run_id, seed)
        self._deciding.add(run_id)
        first = asyncio.ensure_future(self._first_event(events, len(seed)))
        task = self._start(run_id, self.runner.decide(spec, run_id, decision, on_event=events.publish), events)
        task.add_done_callback(lambda _: self._deciding.discard(run_id))
        # Return once the decision is taken (the run resumes: its first event) — or refused.
        await asyncio.wait([task, first], return_when=asyncio.FIRST_COMPLETED)
        first.cancel()
        if task.done() and not task.cancelled() and (refused := task.exception()) is not None:
            if previous is not None:  # nothing changed: followers keep the run's own events
                self._logs[run_id] = previous
            raise refused  # RunNotWaiting, ApprovalForbidden, InvalidInput (a bad edit), …
        return await self.status(run_id)

    async def cancel(self, run_id: str) -> RunRecord:
        record = await self.status(run_id)
        task = self._tasks.get(run_id)
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])
            return await self.status(run_id)
        if record.status == "waiting_approval" and run_id not in self._deciding:  # nothing runs: the record alone says it ended
            error = {"type": "Cancelled", "code": "cancelled", "message": "the run was cancelled while it waited for approval"}
            await asyncio.to_thread(self.runner.runs.finish_run, run_id, "cancelled", record.steps, error=error)
            return await self.status(run_id)
        if record.status in ("running", "pending"):
            raise RunNotWaiting(f"run {run_id} is not running in this process (another one owns it); cancel it there")
        raise RunNotWaiting(f"run {run_id} already ended ({record.status}); nothing was changed")

    async def health(self) -> str | None:
        """None (healthy), as the temporal backend says it: runs start in this very process."""
        return None

    async def aclose(self) -> None:
        """Stop the runs still going, left `interrupted` (not cancelled): crash recovery resumes them
        in the next process to start (graphs/recovery.py). The runner belongs to its owner."""
        self.runner.stopping = True
        tasks = [task for task in self._tasks.values() if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    # -- internals -----------------------------------------------------------------------------

    def _new_log(self, run_id: str, seed: list[RunEvent] | None = None) -> _EventLog:
        events = self._logs[run_id] = _EventLog(seed)
        self._logs.move_to_end(run_id)
        running = set(self._tasks)
        while len(self._logs) > KEEP_FINISHED + len(running):  # forget the oldest finished runs' events
            oldest = next((rid for rid in self._logs if rid not in running), None)
            if oldest is None:
                break
            del self._logs[oldest]
        return events

    def _start(self, run_id: str, work: Any, events: _EventLog, *, queued: Callable[[], None] | None = None) -> asyncio.Task[Any]:
        """`queued`: the run waits for a slot first; called if it is cancelled while it waits."""
        began = queued is None

        async def drive() -> Any:
            nonlocal began
            try:
                if began:
                    return await work
                async with self._slots:
                    began = True
                    return await work
            except asyncio.CancelledError:  # the runner recorded `cancelled`; followers hear it too
                if not began:
                    work.close()
                    await asyncio.to_thread(queued)  # type: ignore[arg-type]
                await events.publish(RunEvent("finished", run_id, {"status": "cancelled", "error": None}))
                raise
            except Exception as exc:  # noqa: BLE001 — a refused decision re-raises in decide(); others end the stream
                if not isinstance(exc, RunNotWaiting | RunNotFound | ConfigError):
                    log.exception("run %s stopped with an unexpected error", run_id)
                raise
            finally:
                self._accepted.pop(run_id, None)
                await events.close()
                if self._tasks.get(run_id) is asyncio.current_task():  # not a decision's task started since
                    del self._tasks[run_id]

        task = self._tasks[run_id] = asyncio.create_task(drive(), name=f"flotilla-run-{run_id}")
        task.add_done_callback(lambda done: done.cancelled() or done.exception())  # seen here, not "never retrieved"
        return task

    def _spec_of(self, record: RunRecord) -> WorkflowSpec:
        try:
            return self.workflows(record.workflow)
        except ConfigError:  # started from a workflow file (the CLI): the file the run itself recorded
            source = (getattr(record, "approval", None) or {}).get("workflow_source")
            if not source:
                raise
            from flotilla.graphs.catalog import load_workflow

            return load_workflow(source)

    @staticmethod
    async def _first_event(events: _EventLog, after: int) -> None:
        async for _ in _skip(events.follow(), after):
            return


async def _skip(stream: AsyncIterator[RunEvent], count: int) -> AsyncIterator[RunEvent]:
    seen = 0
    async for event in stream:
        seen += 1
        if seen > count:
            yield event

