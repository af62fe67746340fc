"""Run records: every run, its steps, output or error — kept whatever happens, content per policy.

SQLAlchemy Core, so the same code serves SQLite (default, under the data dir) and PostgreSQL.

Content follows the audit content policy (`run_content.py`): while a run is unfinished its raw
input is kept (a crashed or interrupted run resumes from it); when it finishes, input, output and
steps are replaced by what the policy allows, and a SHA-256 and size of the input stay. A failed
run resumes from its LangGraph checkpoint, which holds the input the graph ran on.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Column, DateTime, Integer, MetaData, String, Table, Text, create_engine, delete, event, func, insert, inspect, select, update,
)
from sqlalchemy.engine import Engine

from flotilla.audit.group_commit import GroupCommit
from flotilla.audit.run_content import content_strings, kept_error, kept_json, kept_steps, kept_text
from flotilla.audit.sanitize import ContentPolicy, Sanitizer
from flotilla.audit.store import AuditStore

__all__ = ["RunStore", "RunRecord", "UNFINISHED", "DONE", "RAW"]

UNFINISHED = frozenset({"running", "waiting_approval", "interrupted", "pending"})
"""Statuses of runs still going or paused: their raw input is kept and retention never prunes them."""
DONE = frozenset({"succeeded", "needs_review", "blocked"})
"""Statuses with nothing left to resume: the runner deletes their LangGraph checkpoint (raw state)."""
RAW = "raw"
"""`RunRecord.content` while the input is kept as given (the run is unfinished)."""

metadata = MetaData()

runs = Table(
    "runs",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("workflow", String(200), nullable=False),
    Column("workflow_version", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("input", Text),
    Column("input_sha256", String(64)),
    Column("input_bytes", Integer),
    Column("content", String(16)),
    Column("output", Text),
    Column("error", Text),
    Column("steps", Text, nullable=False, default="[]"),
    Column("initiator", String(200)),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True)),
    # Durability (graphs/backends): which process runs it and when it last said so (crash
    # detection), the key that started it (the same key never starts two runs), and the approval
    # a `waiting_approval` run waits for (JSON: step, what the approver sees, deadline).
    Column("owner", String(200)),
    Column("heartbeat_at", DateTime(timezone=True)),
    Column("idempotency_key", String(200), unique=True),
    Column("approval", Text),
)


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


class RunStore:
    def __init__(self, url: str, *, audit: AuditStore | None = None, sanitizer: Sanitizer | None = None) -> None:
        self.engine: Engine = create_engine(url)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _secure_delete)
        _upgrade(self.engine)
        # Starts and finishes of concurrent runs share commits (one fsync per group), off the event loop.
        self._group = GroupCommit(self.engine.begin)
        self.audit = audit
        """When set, each start/finish is also appended to the audit chain as a `run` record."""
        self.sanitizer = sanitizer or Sanitizer(ContentPolicy.FULL)
        """The content policy for finished runs (the runtime passes the spans' one; bare stores keep content)."""

    def _audit(self, run_id: str, **event: Any) -> None:
        if self.audit is not None:
            self.audit.record("run", {"run_id": run_id, **event}, run_id=run_id)

    def start_run(self, run_id: str, workflow: str, workflow_version: str, input_text: str, initiator: str | None) -> None:
        digest = hashlib.sha256(input_text.encode("utf-8")).hexdigest()
        self._group.run(
            lambda conn: conn.execute(
                insert(runs).values(
                    run_id=run_id,
                    workflow=workflow,
                    workflow_version=workflow_version,
                    status="running",
                    input=input_text,
                    input_sha256=digest,
                    input_bytes=len(input_text.encode("utf-8")),
                    content=RAW,
                    steps="[]",
                    initiator=initiator,
                    started_at=datetime.now(UTC),
                )
            )
        )
        self._audit(
            run_id,
            event="started",
            workflow=workflow,
            workflow_version=workflow_version,
            initiator=initiator,
            status="running",
            input_sha256=digest,
        )

    def mark_running(self, run_id: str) -> None:
        self._group.run(
            lambda conn: conn.execute(update(runs).where(runs.c.run_id == run_id).values(status="running", ended_at=None, error=None))
        )
        self._audit(run_id, event="resumed", status="running")

    def finish_run(
        self, run_id: str, status: str, steps: list[dict[str, Any]], output: Any = None, error: dict[str, Any] | None = None
    ) -> None:
        """Record the outcome; what is stored of input, output and steps follows the content policy."""
        row = None
        if status not in UNFINISHED:
            with self.engine.connect() as conn:  # the raw input is only ever replaced here, by this run's own finish
                row = conn.execute(select(runs.c.input, runs.c.content).where(runs.c.run_id == run_id)).first()
        raw_input = row.input if row is not None and row.content == RAW else None
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
        self._group.run(lambda conn: conn.execute(update(runs).where(runs.c.run_id == run_id).values(**values)))
        self._audit(run_id, event="finished", status=status, steps=len(steps), error=kept_error(self.sanitizer, error))

    def get_run(self, run_id: str) -> RunRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(runs).where(runs.c.run_id == run_id)).mappings().first()
        if row is None:
            return None
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
        )

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


def _secure_delete(dbapi_conn: Any, _record: Any) -> None:
    # Deleted or replaced rows are overwritten with zeros, so retention really removes the bytes.
    dbapi_conn.execute("PRAGMA secure_delete=ON")
    # Write-ahead log: a commit is one fsync of the log (not journal + database), still durable
    # (synchronous stays FULL), and readers (`flotilla audit runs`) never block the writer.
    if dbapi_conn.execute("PRAGMA database_list").fetchone()[2]:  # a file, not :memory:
        dbapi_conn.execute("PRAGMA journal_mode=WAL")
    dbapi_conn.execute("PRAGMA synchronous=FULL")


def _upgrade(engine: Engine) -> None:
    """Create the table, or rebuild one written before content policy (nullable input, hash columns)."""
    existing = inspect(engine)
    if existing.has_table("runs") and "content" not in {c["name"] for c in existing.get_columns("runs")}:
        old = [c["name"] for c in existing.get_columns("runs")]
        with engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE runs RENAME TO runs_before_content_policy")
            metadata.create_all(conn)
            names = ", ".join(old)
            # Legacy rows kept their input in full; say so rather than pretend it was policed.
            unfinished = ", ".join(f"'{status}'" for status in sorted(UNFINISHED))
            conn.exec_driver_sql(
                f"INSERT INTO runs ({names}, content) SELECT {names}, CASE WHEN status IN ({unfinished}) THEN '{RAW}' ELSE 'full' END"
                " FROM runs_before_content_policy"
            )
            conn.exec_driver_sql("DROP TABLE runs_before_content_policy")
        return
    metadata.create_all(engine)
    # Columns added after the table's first release: nullable, so older rows simply lack them.
    present = {c["name"] for c in inspect(engine).get_columns("runs")}
    with engine.begin() as conn:
        for column in runs.columns:
            if column.name not in present:
                conn.exec_driver_sql(f"ALTER TABLE runs ADD COLUMN {column.name} {column.type.compile(engine.dialect)}")
                if column.unique:
                    conn.exec_driver_sql(f"CREATE UNIQUE INDEX IF NOT EXISTS ix_runs_{column.name} ON runs ({column.name})")
