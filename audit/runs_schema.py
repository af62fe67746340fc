"""The run store's table and statuses, and how an older table is brought up to date."""

from __future__ import annotations

from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, Text, inspect
from sqlalchemy.engine import Engine

__all__ = ["runs", "metadata", "upgrade", "UNFINISHED", "RESUMABLE", "DONE", "RAW"]

UNFINISHED = frozenset({"running", "waiting_approval", "interrupted", "pending"})
"""Statuses of runs still going or paused: their raw input is kept and retention never prunes them."""
RESUMABLE = ("running", "interrupted")
"""Statuses crash recovery resumes once the run's owner is gone (graphs/recovery.py)."""
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


def upgrade(engine: Engine) -> None:
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
