"""Run records: every run, its input, steps, output or error — kept whatever happens.

SQLAlchemy Core, so the same code serves SQLite (default, under the data dir) and PostgreSQL.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, DateTime, MetaData, String, Table, Text, create_engine, insert, select, update
from sqlalchemy.engine import Engine

from flotilla.audit.store import AuditStore

__all__ = ["RunStore", "RunRecord"]

metadata = MetaData()

runs = Table(
    "runs",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("workflow", String(200), nullable=False),
    Column("workflow_version", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("input", Text, nullable=False),
    Column("output", Text),
    Column("error", Text),
    Column("steps", Text, nullable=False, default="[]"),
    Column("initiator", String(200)),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True)),
)


@dataclass(frozen=True, slots=True)
class RunRecord:
    run_id: str
    workflow: str
    workflow_version: str
    status: str
    input: str
    output: Any
    error: dict[str, Any] | None
    steps: list[dict[str, Any]]
    initiator: str | None
    started_at: datetime
    ended_at: datetime | None


class RunStore:
    def __init__(self, url: str, *, audit: AuditStore | None = None) -> None:
        self.engine: Engine = create_engine(url)
        metadata.create_all(self.engine)
        self.audit = audit
        """When set, each start/finish is also appended to the audit chain as a `run` record."""

    def _audit(self, run_id: str, **event: Any) -> None:
        if self.audit is not None:
            self.audit.record("run", {"run_id": run_id, **event}, run_id=run_id)

    def start_run(self, run_id: str, workflow: str, workflow_version: str, input_text: str, initiator: str | None) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                insert(runs).values(
                    run_id=run_id,
                    workflow=workflow,
                    workflow_version=workflow_version,
                    status="running",
                    input=input_text,
                    steps="[]",
                    initiator=initiator,
                    started_at=datetime.now(UTC),
                )
            )
        self._audit(
            run_id,
            event="started",
            workflow=workflow,
            workflow_version=workflow_version,
            initiator=initiator,
            status="running",
            input_sha256=hashlib.sha256(input_text.encode("utf-8")).hexdigest(),
        )

    def mark_running(self, run_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(runs).where(runs.c.run_id == run_id).values(status="running", ended_at=None, error=None))
        self._audit(run_id, event="resumed", status="running")

    def finish_run(
        self, run_id: str, status: str, steps: list[dict[str, Any]], output: Any = None, error: dict[str, Any] | None = None
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(runs)
                .where(runs.c.run_id == run_id)
                .values(
                    status=status,
                    steps=json.dumps(steps),
                    output=None if output is None else json.dumps(output),
                    error=None if error is None else json.dumps(error),
                    ended_at=datetime.now(UTC),
                )
            )
        self._audit(run_id, event="finished", status=status, steps=len(steps), error=error)

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
        )
