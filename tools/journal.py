"""The tool-call journal: "started" before a side-effecting call is sent, "finished" with its result.

Why: a process can die between sending a call and checkpointing the step that made it. When
the step runs again (a resumed run, a retried activity) its calls carry the same idempotency
keys (tools/idempotency.py), and the journal says what became of each:

    no entry            never sent: send it
    finished            it happened: its recorded result is returned, nothing is sent again
    started, unfinished it may or may not have happened. Re-sent with the SAME key when that is
                        safe — the tool is read-only or idempotent, or its server honours keys
                        (the bundled ledger) — otherwise refused with ToolCallUncertain, and the
                        run ends `needs_review` naming the call (graphs/tool_node.py)

Only calls to tools not marked read-only are journaled, so lookups cost nothing extra. Entries
hold tool results (raw, like the LangGraph checkpoint): `forget_run` drops a finished run's.
SQLAlchemy Core, so the journal lives in the run store's database, SQLite or PostgreSQL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Boolean, Column, DateTime, MetaData, String, Table, Text, create_engine, delete, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from flotilla.audit.sqlite_durable import durable_sqlite

__all__ = ["ToolCallJournal", "JournalEntry"]

metadata = MetaData()

tool_calls = Table(
    "tool_calls",
    metadata,
    Column("idempotency_key", String(80), primary_key=True),
    Column("run_id", String(64), nullable=False, index=True),
    Column("step", String(400), nullable=False),
    Column("tool", String(200), nullable=False),
    Column("state", String(16), nullable=False),
    Column("is_error", Boolean),
    Column("result", Text),  # the CallToolResult as JSON (MCP wire form), once finished
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
)


@dataclass(frozen=True, slots=True)
class JournalEntry:
    key: str
    run_id: str
    step: str
    tool: str
    state: Literal["started", "finished"]
    is_error: bool | None
    result: dict[str, Any] | None
    started_at: datetime
    finished_at: datetime | None


class ToolCallJournal:
    def __init__(self, url: str) -> None:
        # "started" must be on disk before the call leaves, and a write waits (not fails) while
        # the run store writes to the same file at the same moment.
        self.engine: Engine = durable_sqlite(create_engine(url), busy_timeout_ms=10000)
        metadata.create_all(self.engine)
        self._journaled: set[str] = set()  # runs this object journaled a call for, until forgotten

    def journaled_here(self, run_id: str) -> bool:
        """Whether this journal started a call of the run (a run that ran nowhere else and
        journaled nothing here has no entries to forget: its finish skips the write)."""
        return run_id in self._journaled

    def get(self, key: str) -> JournalEntry | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(tool_calls).where(tool_calls.c.idempotency_key == key)).mappings().first()
        return None if row is None else _entry(row)

    def start(self, key: str, *, run_id: str, step: str, tool: str) -> None:
        """Record that the call is about to be sent (committed before it is)."""
        now = datetime.now(UTC)
        self._journaled.add(run_id)  # before the write: an entry may exist from here on
        with self.engine.begin() as conn:
            try:
                with conn.begin_nested():
                    conn.execute(insert(tool_calls).values(idempotency_key=key, run_id=run_id, step=step, tool=tool, state="started", started_at=now))
            except IntegrityError:  # a re-send of an interrupted call: same key, started again
                conn.execute(update(tool_calls).where(tool_calls.c.idempotency_key == key).values(state="started", started_at=now))

    def finish(self, key: str, result: dict[str, Any], *, is_error: bool) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(tool_calls)
                .where(tool_calls.c.idempotency_key == key)
                .values(state="finished", is_error=is_error, result=json.dumps(result), finished_at=datetime.now(UTC))
            )

    def entries(self, run_id: str) -> list[JournalEntry]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(tool_calls).where(tool_calls.c.run_id == run_id).order_by(tool_calls.c.started_at)).mappings()
            return [_entry(row) for row in rows]

    def forget_run(self, run_id: str) -> int:
        """Drop a finished run's entries (nothing of it will run again); returns how many."""
        with self.engine.begin() as conn:
            forgotten = conn.execute(delete(tool_calls).where(tool_calls.c.run_id == run_id)).rowcount
        self._journaled.discard(run_id)
        return forgotten

    def close(self) -> None:
        self.engine.dispose()


def _entry(row: Any) -> JournalEntry:
    return JournalEntry(
        key=row["idempotency_key"],
        run_id=row["run_id"],
        step=row["step"],
        tool=row["tool"],
        state=row["state"],
        is_error=row["is_error"],
        result=None if row["result"] is None else json.loads(row["result"]),
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )
