"""Crash recovery of local runs: owners, heartbeats, orphans, and taking an orphan over.

Every run records the process that runs it (`host:pid:start`, the start being the process's
start time, so a recycled pid is not mistaken for the old process) and a heartbeat. A `running`
run is an orphan when its owner is dead:

    same host    its pid is gone, or now belongs to a process that started at another time
    other host   its heartbeat is older than the lease (60 s by default)

An orphan is taken over atomically (a compare-and-set on its owner: of two processes trying,
exactly one wins) and resumed from its checkpoint with `WorkflowRunner.resume`. `flotilla serve`
does this at start-up and periodically; `flotilla runs recover` does it once.

The heartbeat is one background task per runner that, every few seconds, updates all of the
process's running runs in one statement, in a thread: no disk work on the event loop per step.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flotilla.audit.errors import ConfigError, FlotillaError

if TYPE_CHECKING:
    from flotilla.audit.runs import RunStore
    from flotilla.graphs.runner import RunResult, WorkflowRunner
    from flotilla.graphs.spec import WorkflowSpec

__all__ = [
    "LEASE_S",
    "HEARTBEAT_S",
    "process_owner",
    "owner_is_alive",
    "Orphan",
    "Recovered",
    "find_orphans",
    "settle_unstarted",
    "recover_orphans",
    "Heartbeat",
    "RecoveryLoop",
    "recovering",
    "workflow_resolver",
]

log = logging.getLogger(__name__)

LEASE_S = 60.0
"""A run owned by a process on another host is an orphan once its heartbeat is this old."""
HEARTBEAT_S = 15.0
"""How often a process refreshes the heartbeat of its running runs (well inside the lease)."""


def _start_marker(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot on Linux), or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            # Field 22 counts from after the command name, which may itself hold spaces and ')'.
            return stat.read().rsplit(b")", 1)[1].split()[19].decode()
    except FileNotFoundError:
        return None
    except OSError:
        pass
    try:  # no /proc (macOS): psutil, when installed, knows the creation time
        import psutil

        return f"{psutil.Process(pid).create_time():.2f}"
    except ImportError:
        pass
    except Exception:  # noqa: BLE001 — psutil.NoSuchProcess and friends
        return None
    try:  # last resort: only whether the pid exists
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return "?"


@functools.cache
def _host() -> str:
    return socket.gethostname()


def process_owner() -> str:
    """This process as a run owner: `host:pid:start` (by pid, so a forked child is its own owner)."""
    return _owner(os.getpid())


@functools.cache
def _owner(pid: int) -> str:
    return f"{_host()}:{pid}:{_start_marker(pid) or uuid.uuid4().hex}"


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def owner_is_alive(owner: str | None, heartbeat_at: datetime | None, *, now: datetime | None = None, lease_s: float = LEASE_S) -> bool:
    """Whether the process that owns a run may still be running it."""
    now = now or datetime.now(UTC)
    fresh = heartbeat_at is not None and (now - _utc(heartbeat_at)).total_seconds() < lease_s
    if not owner:  # a run from before owners were recorded: only its age can tell
        return fresh
    parts = owner.rsplit(":", 2)
    if owner.startswith("temporal:") or len(parts) != 3 or not parts[1].isdigit():
        return True  # not a process but an engine (`temporal:<queue>`), which recovers its runs itself
    host, pid, started = parts
    if host != _host():
        return fresh  # another machine: its heartbeat is all there is to go by
    marker = _start_marker(int(pid))
    return marker is not None and marker in (started, "?")


@dataclass(frozen=True, slots=True)
class Orphan:
    run_id: str
    workflow: str
    owner: str | None
    heartbeat_at: datetime | None
    workflow_version: str | None = None


@dataclass(frozen=True, slots=True)
class Recovered:
    run_id: str
    workflow: str
    previous_owner: str | None
    status: str
    """The resumed run's outcome (`succeeded`, `failed`, …), or `taken` when another process won it."""
    error: str | None = None


def find_orphans(runs: RunStore, *, lease_s: float = LEASE_S, now: datetime | None = None) -> list[Orphan]:
    """Running runs whose owner is dead: one query, then a /proc look-up per distinct owner."""
    now = now or datetime.now(UTC)
    alive: dict[str | None, bool] = {}
    orphans = []
    for run_id, workflow, version, owner, heartbeat_at, started_at in runs.running_runs():
        beat = heartbeat_at or (started_at if owner is None else None)
        key = owner if owner else f"-{run_id}"  # ownerless runs are judged each on its own age
        if key not in alive:
            alive[key] = owner_is_alive(owner, beat, now=now, lease_s=lease_s)
        if not alive[key]:
            orphans.append(Orphan(run_id, workflow, owner, heartbeat_at, version))
    return orphans


def settle_unstarted(runs: RunStore, *, lease_s: float = LEASE_S, now: datetime | None = None) -> list[str]:
    """Runs an idempotency key claimed whose process died before starting them: nothing ran and
    their input was never kept, so they end `failed` saying so (a retry with the same key gets
    that answer, not a run pending forever). Returns their ids."""
    now = now or datetime.now(UTC)
    settled = []
    for run_id, owner, heartbeat_at in runs.unstarted_claims():
        if owner_is_alive(owner, heartbeat_at, now=now, lease_s=lease_s):
            continue
        error = {"type": "NotStarted", "code": "not_started",
                 "message": f"the process that accepted this run ({owner}) stopped before starting it; nothing ran: submit it again with a new idempotency key"}
        if runs.fail_unstarted(run_id, owner, error):
            settled.append(run_id)
            log.warning("run %s was accepted by process %s, which died before starting it: marked failed", run_id, owner)
    return settled


SpecResolver = Callable[[str, "str | None"], "WorkflowSpec"]
"""(workflow name, version the run started with) -> the workflow to resume it with."""


def workflow_resolver(registered: dict[str, str] | None, search: list[Path]) -> SpecResolver:
    """Find a run's workflow again by the name and version its record keeps: built-in or
    registered, or a YAML file of that name in `search` (beside flotilla.yaml, its workflows/
    folder, the working directory) — where a workflow given to `flotilla run` as a path lives.
    The candidate of the run's own version wins (a file that shadows a built-in name, say)."""
    from flotilla.graphs.catalog import load_workflow

    def resolve(name: str, version: str | None = None) -> WorkflowSpec:
        found: list[WorkflowSpec] = []
        problem = None
        try:
            found.append(load_workflow(name, registered))
        except FlotillaError as exc:
            problem = exc.message
        for folder in search:
            for candidate in (folder / f"{name}.yaml", folder / f"{name}.yml", folder / "workflows" / f"{name}.yaml"):
                if candidate.is_file() and (spec := load_workflow(candidate, registered)).name == name:
                    found.append(spec)
        if not found:
            raise ConfigError(f"{problem}; a workflow run from a file is found again as {name}.yaml beside flotilla.yaml or in ./workflows/")
        for spec in found:
            if version is None or spec.version() == version:
                return spec
        log.warning("workflow %s changed since the run started (version %s); resuming with %s", name, version, found[0].version())
        return found[0]

    return resolve


async def recover_orphans(
    runner: WorkflowRunner,
    resolve: SpecResolver,
    *,
    lease_s: float = LEASE_S,
    concurrency: int = 4,
    on_event: Callable[..., Any] | None = None,
) -> list[Recovered]:
    """Take over every orphan (atomically) and resume it from its checkpoint; returns what happened.
    First, `started` / `finished` records a killed process left out of the audit chain are
    appended, marked repaired (record_repair.py)."""
    from flotilla.graphs.record_repair import repair_run_records  # imports this module

    try:
        await asyncio.to_thread(repair_run_records, runner.runs, grace_s=lease_s)
    except Exception:  # noqa: BLE001 — the audit store may be down; orphans still resume, the next round repairs
        log.exception("could not repair missing run records in the audit chain")
    try:
        await asyncio.to_thread(settle_unstarted, runner.runs, lease_s=lease_s)
    except Exception:  # noqa: BLE001 — the next round tries again
        log.exception("could not settle runs claimed by a process that died before starting them")
    orphans = await asyncio.to_thread(find_orphans, runner.runs, lease_s=lease_s)
    gate = asyncio.Semaphore(concurrency)

    async def recover(orphan: Orphan) -> Recovered:
        async with gate:
            won = await asyncio.to_thread(runner.runs.take_over, orphan.run_id, orphan.owner, runner.owner)
            if not won:
                return Recovered(orphan.run_id, orphan.workflow, orphan.owner, "taken")
            try:
                spec = resolve(orphan.workflow, orphan.workflow_version)
                log.info("resuming run %s of %s, whose process %s died", orphan.run_id, orphan.workflow, orphan.owner)
                result: RunResult = await runner.resume(spec, orphan.run_id, on_event=on_event)
            except FlotillaError as exc:
                # The workflow is gone or broken, or the run cannot resume: its record says so (failed,
                # which a person may resume), rather than staying `running` for the next process to retry.
                error = {"type": type(exc).__name__, "code": exc.code, "message": f"cannot recover: {exc.message}"}
                record = await asyncio.to_thread(runner.runs.get_run, orphan.run_id)
                await asyncio.to_thread(runner.runs.finish_run, orphan.run_id, "failed", record.steps if record else [], error=error)
                return Recovered(orphan.run_id, orphan.workflow, orphan.owner, "failed", error["message"])
            return Recovered(orphan.run_id, orphan.workflow, orphan.owner, result.status, (result.error or {}).get("message"))

    return list(await asyncio.gather(*(recover(o) for o in orphans)))


class Heartbeat:
    """One task per runner refreshing `heartbeat_at` of all the process's running runs, in a thread."""

    def __init__(self, runs: RunStore, owner: str, interval_s: float = HEARTBEAT_S) -> None:
        self.runs, self.owner, self.interval_s = runs, owner, interval_s
        self._task: asyncio.Task[None] | None = None

    def ensure_started(self) -> None:
        """Start beating on the running loop (again, if the runner moved to a new loop)."""
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = loop.create_task(self._beat(), name="flotilla-heartbeat")

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await asyncio.to_thread(self.runs.heartbeat, self.owner)
            except Exception:  # noqa: BLE001 — a missed beat is retried; the lease allows several
                log.warning("could not refresh the heartbeat of runs owned by %s", self.owner, exc_info=True)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None or task.done():
            return
        try:
            same_loop = task.get_loop() is asyncio.get_running_loop()
        except RuntimeError:
            same_loop = False
        task.cancel()
        if same_loop:
            with contextlib.suppress(asyncio.CancelledError):
                await task


class RecoveryLoop:
    """`flotilla serve`: recover orphans at start-up, then every `interval_s`, in the background."""

    def __init__(self, runner: WorkflowRunner, resolve: SpecResolver, *, interval_s: float = 30.0, lease_s: float = LEASE_S) -> None:
        self.runner, self.resolve, self.interval_s, self.lease_s = runner, resolve, interval_s, lease_s
        self.recovered: list[Recovered] = []
        self._task: asyncio.Task[None] | None = None
        self._rounds: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="flotilla-recovery")

    async def _loop(self) -> None:
        # A round lasts as long as the runs it resumes; rounds may overlap, since a run this
        # process took over has a live owner and is never an orphan again.
        while True:
            task = asyncio.get_running_loop().create_task(self._round())
            self._rounds.add(task)
            task.add_done_callback(self._rounds.discard)
            await asyncio.sleep(self.interval_s)

    async def _round(self) -> None:
        try:
            done = await recover_orphans(self.runner, self.resolve, lease_s=self.lease_s)
        except Exception:  # noqa: BLE001 — the next round tries again
            log.exception("crash recovery round failed")
            return
        self.recovered += done
        for item in done:
            log.warning("recovered run %s (%s) of dead process %s: %s", item.run_id, item.workflow, item.previous_owner, item.status)

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._rounds) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None


@contextlib.asynccontextmanager
async def recovering(runner: WorkflowRunner, resolve: SpecResolver, *, interval_s: float = 30.0, lease_s: float = LEASE_S) -> AsyncIterator[RecoveryLoop]:
    """While inside: orphans are recovered now and every `interval_s` (what `flotilla serve` does)."""
    loop = RecoveryLoop(runner, resolve, interval_s=interval_s, lease_s=lease_s)
    loop.start()
    try:
        yield loop
    finally:
        await loop.stop()
