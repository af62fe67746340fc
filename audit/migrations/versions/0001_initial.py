"""Audit store: chain, signed head, prune anchors, run summaries.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_records",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("run_id", sa.String(64)),
        sa.Column("recorded_at", sa.String(32), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_index("ix_audit_records_run_id", "audit_records", ["run_id"])
    op.create_index("ix_audit_records_recorded_at", "audit_records", ["recorded_at"])
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("recorded_at", sa.String(32), nullable=False),
        sa.Column("signature", sa.String(64)),
    )
    op.create_table(
        "audit_anchors",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("recorded_at", sa.String(32), nullable=False),
        sa.Column("pruned", sa.BigInteger(), nullable=False),
        sa.Column("before", sa.String(32), nullable=False),
        sa.Column("signature", sa.String(64)),
    )
    op.create_table(
        "audit_runs",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("trace_id", sa.String(32)),
        sa.Column("workflow", sa.String(200)),
        sa.Column("workflow_version", sa.String(64)),
        sa.Column("status", sa.String(24)),
        sa.Column("initiator", sa.String(200)),
        sa.Column("sensitivity", sa.String(32)),
        sa.Column("started_at", sa.String(32)),
        sa.Column("ended_at", sa.String(32)),
        sa.Column("duration_ms", sa.Float()),
        sa.Column("models", sa.Text(), nullable=False),
        sa.Column("tools", sa.Text(), nullable=False),
        sa.Column("agents", sa.Text(), nullable=False),
        sa.Column("verdict", sa.String(16)),
        sa.Column("rail_checks", sa.Integer(), nullable=False),
        sa.Column("blocked", sa.Integer(), nullable=False),
        sa.Column("escalated", sa.Boolean(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("spans", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_audit_runs_started_at", "audit_runs", ["started_at"])
    op.create_index("ix_audit_runs_workflow", "audit_runs", ["workflow"])


def downgrade() -> None:
    for table in ("audit_runs", "audit_anchors", "audit_head", "audit_records"):
        op.drop_table(table)
