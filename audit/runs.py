"""Run records: every run, its steps, output or error — kept whatever happens, content per policy.

SQLAlchemy Core, so the same code serves SQLite (default, under the data dir) and PostgreSQL.

Content follows the audit content policy (`run_content.py`): while a run is unfinished its raw
input is kept (a crashed or interrupted run resumes from it); when it finishes, input, output and
steps are replaced by what the policy allows (under `redacted` just after, off the run's path:
run_redaction.py), and a SHA-256 and size of the input stay. A failed
run resumes from its LangGraph checkpoint, which holds the input the graph ran on.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, create_engine, delete, func, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from flotilla.audit.group_commit import GroupCommit
from flotilla.audit.run_audit_writer import RunAuditWriter
from flotilla.audit.run_content import content_strings, kept_error, kept_json, kept_steps, kept_text
from flotilla.audit.run_redaction import RunRedactionQueue
from flotilla.audit.runs_schema import DONE, RAW, RESUMABLE, UNFINISHED, runs, upgrade
from flotilla.audit.sanitize import ContentPolicy, Sanitizer
from flotilla.audit.sqlite_durable import durable_sqlite
from flotilla.audit.store import AuditStore

__all__ = ["RunStore", "RunRecord", "UNFINISHED", "DONE", "RAW", "runs"]

@dataclass(frozen=True, slots=True)
class RunRecord:
    run_id: str
    workflow: str
    workflow_version: str
    status: str
    input: str | None
    """The raw input while the run is unfinished, then what the content policy keeps (None under `off`)."""
    output: Any
    error: dict[str, Any] | None
    steps: list[dict[str, Any]]
    initiator: str | None
    started_at: datetime
    ended_at: datetime | None
    input_sha256: str | None = None
    input_bytes: int | None = None
    content: str | None = None
    """`raw`, or the policy (`off` / `redacted` / `full`) the stored content follows."""
    approval: dict[str, Any] | None = None
    """The approval a `waiting_approval` run waits for (step, what the approver sees, deadline),
    and after it, the decision (graphs/approval.py)."""


# A run's start and finish statements, built once (building and cache-keying them per call cost
# more CPU than SQLite's own work). Values go in as parameters: an update sets the columns named.
_INSERT_RUN = insert(runs)
_RUN_CONTENT = select(runs.c.input, runs.c.content).where(runs.c.run_id == bindparam("b_run_id"))
_UPDATE_RUN = update(runs).where(runs.c.run_id == bindparam("b_run_id"))

class RunStore:
    def __init__(self, url: str, *, audit: AuditStore | None = None, sanitizer: Sanitizer | None = None) -> None:
        # Deleted rows are zeroed (retention really removes the bytes); WAL keeps commits durable.
        self.engine: Engine = durable_sqlite(create_engine(url), secure_delete=True)
        upgrade(self.engine)
        # Starts and finishes of concurrent runs share commits (one fsync per group), off the event loop.
        self._group = GroupCommit(self.engine.begin)
        self.audit = audit
        """When set, each start/finish is also appended to the audit chain as a `run` record."""
        self._audit_writer: RunAuditWriter | None = None
        self.executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="flotilla-runs")
        """For the runner's writes from the event loop: enough threads that a burst of run starts
        shares one commit (group commit) instead of queueing behind the loop's default executor
        (CPU count + 4 threads) one fsync after another. 16, not more: 100 runs in flight finish
        as fast with 8, 16 or 64 threads here, and each thread costs memory."""
        self.sanitizer = sanitizer or Sanitizer(ContentPolicy.FULL)
        """The content policy for finished runs (the runtime passes the spans' one; bare stores keep content)."""
        self._claimed: set[str] = set()  # `pending` rows claim_run wrote (idempotency keys), which start_run fills in
        self.redaction = RunRedactionQueue(self)
        """Redacts finished runs' content off the run's path (`drain()` before shutdown)."""

    @property
    def audit_writer(self) -> RunAuditWriter | None:
        """Appends the `run` records after the row's own commit, now or in the background (run_audit_writer.py)."""
        if self.audit is None:
            return None
        if self._audit_writer is None or self._audit_writer.audit is not self.audit:
            self._audit_writer = RunAuditWriter(self.audit)
        return self._audit_writer

    def _audit(self, run_id: str, **event: Any) -> None:
        if self.audit_writer is not None:
            self.audit_writer.now(run_id, event)

    def _audit_later(self, run_id: str, **event: Any) -> None:
        if self.audit_writer is not None:
            self.audit_writer.later(run_id, event)

    def _commit_with_record(self, run_id: str, write: Any, *, defer_audit: bool = False, **event: Any) -> None:
        """`write` in the run store, then the run's audit record (after any it still has in the
        background); both on disk on return, or with `defer_audit` the row only and the record in
        the background. Row first: a kill in between leaves a record to repair from the row
        (graphs/record_repair.py), never a record its row contradicts."""
        self._group.run(write)
        (self._audit_later if defer_audit else self._audit)(run_id, **event)

    def start_run(
        self,
        run_id: str,
        workflow: str,
        workflow_version: str,
        input_text: str,
        initiator: str | None,
        *,
        owner: str | None = None,
        defer_audit: bool = False,
    ) -> None:
        """`owner`: the process running it (graphs/recovery.py), with a first heartbeat.
        `defer_audit`: return once the row is on disk; the `started` record follows in the
        background (recoverable from the row), in the chain before the run's next record."""
        digest = hashlib.sha256(input_text.encode("utf-8")).hexdigest()
        now = datetime.now(UTC)
        claimed = run_id in self._claimed
        self._claimed.discard(run_id)
        row = {
            "run_id": run_id, "workflow": workflow, "workflow_version": workflow_version, "status": "running",
            "input": input_text, "input_sha256": digest, "input_bytes": len(input_text.encode("utf-8")), "content": RAW,
            "steps": "[]", "initiator": initiator, "started_at": now, "owner": owner, "heartbeat_at": now if owner else None,
        }
        # A claimed row is filled in only while still `pending`: a late retry of the start
        # (Temporal runs activities at least once) must not turn a finished run back to running.
        written = self._group.run(
            lambda conn: conn.execute(update(runs).where(runs.c.run_id == run_id, runs.c.status == "pending").values(**row))
            if claimed else conn.execute(_INSERT_RUN, row)
        )
        if claimed and not written.rowcount:  # already started (or finished) by an earlier attempt
            return
        (self._audit_later if defer_audit else self._audit)(
            run_id,
            event="started",
            workflow=workflow,
            workflow_version=workflow_version,
            initiator=initiator,
            status="running",
            input_sha256=digest,
        )

    def claim_run(
        self, run_id: str, workflow: str, workflow_version: str, idempotency_key: str, initiator: str | None, *, owner: str | None = None
    ) -> str:
        """Reserve `idempotency_key` for a new run (a `pending` row that `start_run` fills in).
        Returns the run id holding the key: `run_id`, or the run an earlier submit started — the
        unique column settles a race between two submits, in one process or several. `owner`: the
        process that will start it; should it die first, recovery settles the row (`fail_unstarted`)."""
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(runs).values(
                        run_id=run_id, workflow=workflow, workflow_version=workflow_version, status="pending", steps="[]",
                        initiator=initiator, started_at=datetime.now(UTC), idempotency_key=idempotency_key,
                        owner=owner, heartbeat_at=datetime.now(UTC) if owner else None,
                    )
                )
        except IntegrityError:
            holder = self.run_for_key(idempotency_key)
            if holder is None:  # the conflict was not the key's (a reused run id): not ours to hide
                raise
            return holder
        self._claimed.add(run_id)
        return run_id

    def run_for_key(self, idempotency_key: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(select(runs.c.run_id).where(runs.c.idempotency_key == idempotency_key)).scalar()

    def mark_running(self, run_id: str, *, owner: str | None = None) -> None:
        owned = {"owner": owner, "heartbeat_at": datetime.now(UTC)} if owner else {}
        self._group.run(
            lambda conn: conn.execute(update(runs).where(runs.c.run_id == run_id).values(status="running", ended_at=None, error=None, **owned))
        )
        self._audit(run_id, event="resumed", status="running")

    # Crash recovery (graphs/recovery.py): heartbeats, running runs and their owners, take-over.

    def heartbeat(self, owner: str) -> int:
        """Every running run of `owner` (and claimed one waiting to start) says it is alive: one
        statement however many there are."""
        with self.engine.begin() as conn:
            stmt = update(runs).where(runs.c.owner == owner, runs.c.status.in_(("running", "pending"))).values(heartbeat_at=datetime.now(UTC))
            return conn.execute(stmt).rowcount

    def running_runs(self) -> list[tuple[str, str, str, str | None, datetime | None, datetime]]:
        """(run_id, workflow, workflow_version, owner, heartbeat_at, started_at) of every run marked
        `running`, or `interrupted` (its process stopped on purpose mid-run: resumable just the same)."""
        cols = (runs.c.run_id, runs.c.workflow, runs.c.workflow_version, runs.c.owner, runs.c.heartbeat_at, runs.c.started_at)
        with self.engine.connect() as conn:
            return [tuple(row) for row in conn.execute(select(*cols).where(runs.c.status.in_(RESUMABLE)))]

    def interrupt_run(self, run_id: str, error: dict[str, Any]) -> None:
        """The process stops (a graceful shutdown) in the middle of the run: `interrupted`, its owner
        kept, so the next process's crash recovery resumes it from its checkpoint."""
        stmt = update(runs).where(runs.c.run_id == run_id, runs.c.status == "running")
        self._group.run(lambda conn: conn.execute(stmt.values(status="interrupted", error=_json_or_none(error))))
        self._audit(run_id, event="interrupted", status="interrupted", error=error)

    def unstarted_claims(self) -> list[tuple[str, str, datetime | None]]:
        """(run_id, owner, heartbeat_at) of `pending` rows an idempotency key claimed for a process to start."""
        with self.engine.connect() as conn:
            stmt = select(runs.c.run_id, runs.c.owner, runs.c.heartbeat_at).where(runs.c.status == "pending", runs.c.owner.is_not(None))
            return [tuple(row) for row in conn.execute(stmt)]

    def fail_unstarted(self, run_id: str, owner: str, error: dict[str, Any]) -> bool:
        """A claimed run its process never started (it died first): `failed` with the reason, so a
        retry with the same key gets an answer instead of a run pending forever. False when the
        row is no longer that owner's pending claim (it started after all)."""
        stmt = update(runs).where(runs.c.run_id == run_id, runs.c.status == "pending", runs.c.owner == owner)
        with self.engine.begin() as conn:
            row = conn.execute(select(runs.c.workflow, runs.c.workflow_version, runs.c.initiator).where(runs.c.run_id == run_id)).first()
            if row is None or not conn.execute(stmt.values(status="failed", error=_json_or_none(error), ended_at=datetime.now(UTC))).rowcount:
                return False
        self._audit(run_id, event="started", workflow=row.workflow, workflow_version=row.workflow_version, initiator=row.initiator, status="pending")
        self._audit(run_id, event="finished", status="failed", steps=0, error=error)
        return True

    def take_over(self, run_id: str, previous_owner: str | None, owner: str) -> bool:
        """Make `owner` the owner of a running run still owned by `previous_owner`, atomically: of
        several processes trying, exactly one gets True (a compare-and-set in one UPDATE)."""
        was = runs.c.owner.is_(None) if previous_owner is None else runs.c.owner == previous_owner
        with self.engine.begin() as conn:
            stmt = update(runs).where(runs.c.run_id == run_id, runs.c.status.in_(RESUMABLE), was)
            won = conn.execute(stmt.values(owner=owner, heartbeat_at=datetime.now(UTC))).rowcount == 1
        if won:
            self._audit(run_id, event="recovered", previous_owner=previous_owner, owner=owner)
        return won

    def finish_run(
        self,
        run_id: str,
        status: str,
        steps: list[dict[str, Any]],
        output: Any = None,
        error: dict[str, Any] | None = None,
        *,
        defer_audit: bool = False,
    ) -> None:
        """Record the outcome; what is stored of input, output and steps follows the content policy.
        `defer_audit`: return once the row is on disk; the `finished` record follows in the
        background (as a run's `started` one does: recoverable from the row)."""
        row = None
        if status not in UNFINISHED:
            with self.engine.connect() as conn:  # the raw input is only ever replaced here, by this run's own finish
                row = conn.execute(_RUN_CONTENT, {"b_run_id": run_id}).first()
        raw_input = row.input if row is not None and row.content == RAW else None
        if raw_input is not None and self._finish_deferred(run_id, status, steps, output, error, defer_audit):
            return
        # Every text of the record redacted as one batch, not one redactor call per string.
        self.sanitizer.prime(content_strings([raw_input, output, steps]))
        values: dict[str, Any] = {
            "status": status,
            "steps": json.dumps(kept_steps(self.sanitizer, steps)),
            "output": _json_or_none(kept_json(self.sanitizer, output)),
            "error": _json_or_none(kept_error(self.sanitizer, error)),
            "ended_at": datetime.now(UTC),
        }
        if row is not None and row.content == RAW:
            values.update(input=kept_text(self.sanitizer, raw_input), content=self.sanitizer.policy.value)
        self._commit_with_record(
            run_id, lambda conn: conn.execute(_UPDATE_RUN, {"b_run_id": run_id, **values}),
            defer_audit=defer_audit, event="finished", status=status, steps=len(steps), error=kept_error(self.sanitizer, error),
        )

    def _finish_deferred(
        self, run_id: str, status: str, steps: list[dict[str, Any]], output: Any, error: dict[str, Any] | None, defer_audit: bool
    ) -> bool:
        """Under `redacted`: the outcome on disk now, content still `raw`, redacted in the
        background (run_redaction.py) so the run's caller does not wait on NER. False: not deferred."""
        if not self.sanitizer.redacts:
            return False
        try:
            raw = {"steps": json.dumps(steps), "output": _json_or_none(output)}
        except (TypeError, ValueError):  # not plain JSON: the synchronous path polices it as it is
            return False
        kept = kept_error(self.sanitizer, error)
        values = {**raw, "status": status, "error": _json_or_none(kept), "ended_at": datetime.now(UTC)}
        self._commit_with_record(
            run_id, lambda conn: conn.execute(_UPDATE_RUN, {"b_run_id": run_id, **values}),
            defer_audit=defer_audit, event="finished", status=status, steps=len(steps), error=kept,
        )
        self.redaction.submit(run_id)
        return True

    def get_run(self, run_id: str) -> RunRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(runs).where(runs.c.run_id == run_id)).mappings().first()
        if row is None:
            return None
        if row["content"] == RAW and row["status"] not in UNFINISHED and self.sanitizer.redacts and self.redaction.redact(run_id):
            return self.get_run(run_id)  # finished, its redaction still queued: done now, never read raw
        return RunRecord(
            run_id=row["run_id"],
            workflow=row["workflow"],
            workflow_version=row["workflow_version"],
            status=row["status"],
            input=row["input"],
            output=None if row["output"] is None else json.loads(row["output"]),
            error=None if row["error"] is None else json.loads(row["error"]),
            steps=json.loads(row["steps"]),
            initiator=row["initiator"],
            started_at=row["started_at"],
            ended_at=row["ended_at"],
            input_sha256=row["input_sha256"],
            input_bytes=row["input_bytes"],
            content=row["content"],
            approval=None if row["approval"] is None else json.loads(row["approval"]),
        )

    # Human approval (graphs/approval.py): a run waits, one decision claims it, the chain keeps it.

    def wait_for_approval(self, run_id: str, steps: list[dict[str, Any]], approval: dict[str, Any]) -> None:
        """The run pauses for a person. The request is kept as given (the approver must see it), as
        the raw input of an unfinished run is; a decision replaces it with what the policy keeps."""
        values = {"status": "waiting_approval", "steps": json.dumps(kept_steps(self.sanitizer, steps)), "approval": json.dumps(approval)}
        self._commit_with_record(
            run_id, lambda conn: conn.execute(update(runs).where(runs.c.run_id == run_id).values(**values)),
            event="waiting_approval", status="waiting_approval", step=approval.get("step"), deadline=approval.get("deadline"),
        )

    def claim_approval(self, run_id: str, approval: dict[str, Any], *, owner: str | None = None) -> bool:
        """Take the decision on a waiting run: of two deciders exactly one gets True (a
        compare-and-set on the status); the run is `running` again, `approval` (with the decision
        in it) stored with its content as the policy keeps it."""
        kept = {**approval, "shows": kept_json(self.sanitizer, approval.get("shows"))}
        values: dict[str, Any] = {"status": "running", "approval": json.dumps(kept)}
        if owner:
            values.update(owner=owner, heartbeat_at=datetime.now(UTC))
        with self.engine.begin() as conn:
            stmt = update(runs).where(runs.c.run_id == run_id, runs.c.status == "waiting_approval")
            return conn.execute(stmt.values(**values)).rowcount == 1

    def update_approval(self, run_id: str, approval: dict[str, Any]) -> bool:
        """Change the request of a run still waiting (an escalation); False when it no longer waits."""
        with self.engine.begin() as conn:
            stmt = update(runs).where(runs.c.run_id == run_id, runs.c.status == "waiting_approval")
            return conn.execute(stmt.values(approval=json.dumps(approval))).rowcount == 1

    def record_approval(self, run_id: str, event: dict[str, Any], shows: Any) -> None:
        """An approval event in the audit chain: what the approver saw as the policy keeps it, and its hash."""
        if self.audit is not None:
            digest = hashlib.sha256(json.dumps(shows, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()
            payload = {"run_id": run_id, **event, "shows": kept_json(self.sanitizer, shows), "shows_sha256": digest}
            self.audit.record("approval", payload, run_id=run_id)

    def recent(self, *, limit: int = 20, status: str | None = None) -> list[RunRecord]:
        """The latest runs first (only those with `status`, when given)."""
        stmt = select(runs.c.run_id).order_by(runs.c.started_at.desc()).limit(limit)
        if status is not None:
            stmt = stmt.where(runs.c.status == status)
        with self.engine.connect() as conn:
            ids = list(conn.execute(stmt).scalars())
        return [record for record in map(self.get_run, ids) if record is not None]

    def unfinished(self) -> set[str]:
        with self.engine.connect() as conn:
            return set(conn.execute(select(runs.c.run_id).where(runs.c.status.in_(UNFINISHED))).scalars())

    def prune(self, before: datetime) -> tuple[list[str], list[str]]:
        """Delete finished runs that ended before `before`. Returns (removed, unfinished runs started before it and kept)."""
        cutoff = _utc(before)
        ended = func.coalesce(runs.c.ended_at, runs.c.started_at)
        with self.engine.begin() as conn:
            removed = list(conn.execute(select(runs.c.run_id).where(ended < cutoff, runs.c.status.not_in(UNFINISHED))).scalars())
            kept = list(conn.execute(select(runs.c.run_id).where(runs.c.started_at < cutoff, runs.c.status.in_(UNFINISHED))).scalars())
            if removed:
                conn.execute(delete(runs).where(runs.c.run_id.in_(removed)))
        return removed, kept


def _json_or_none(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
