"""Tables of the audit store (SQLAlchemy Core). Alembic migrations in audit/migrations create them.

`audit_records` is the chain and the only source of truth. `audit_head` and `audit_anchors`
hold the signed head and prune checkpoints. `audit_runs` is a per-run summary derived from
the records, kept so the run list and its filters stay fast; it can be rebuilt.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Float, Index, Integer, MetaData, String, Table, Text

__all__ = ["metadata", "records", "head", "anchors", "run_summaries", "VERSION_TABLE"]

VERSION_TABLE = "audit_alembic_version"
"""Alembic's version table, named apart so the audit store can share a database."""

metadata = MetaData()

records = Table(
    "audit_records",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False),
    Column("kind", String(16), nullable=False),
    Column("run_id", String(64)),
    Column("recorded_at", String(32), nullable=False),
    Column("payload", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_audit_records_run_id", "run_id"),
    Index("ix_audit_records_recorded_at", "recorded_at"),
)

head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("recorded_at", String(32), nullable=False),
    Column("signature", String(64)),
)

anchors = Table(
    "audit_anchors",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("recorded_at", String(32), nullable=False),
    Column("pruned", BigInteger, nullable=False),
    Column("before", String(32), nullable=False),
    Column("signature", String(64)),
)

run_summaries = Table(
    "audit_runs",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("trace_id", String(32)),
    Column("workflow", String(200)),
    Column("workflow_version", String(64)),
    Column("status", String(24)),
    Column("initiator", String(200)),
    Column("sensitivity", String(32)),
    Column("started_at", String(32)),
    Column("ended_at", String(32)),
    Column("duration_ms", Float),
    Column("models", Text, nullable=False, default="[]"),
    Column("tools", Text, nullable=False, default="[]"),
    Column("agents", Text, nullable=False, default="[]"),
    Column("verdict", String(16)),
    Column("rail_checks", Integer, nullable=False, default=0),
    Column("blocked", Integer, nullable=False, default=0),
    Column("escalated", Boolean, nullable=False, default=False),
    Column("input_tokens", BigInteger, nullable=False, default=0),
    Column("output_tokens", BigInteger, nullable=False, default=0),
    Column("cost_usd", Float, nullable=False, default=0.0),
    Column("spans", Integer, nullable=False, default=0),
    # model calls to endpoints that are not local (`flotilla.model_local` false): 0 shows a run stayed on site
    Column("remote_calls", Integer, nullable=False, server_default="0"),
    Column("error", Text),
    Column("last_seq", BigInteger, nullable=False, default=0),
    Index("ix_audit_runs_started_at", "started_at"),
    Index("ix_audit_runs_workflow", "workflow"),
)
