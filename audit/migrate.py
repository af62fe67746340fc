"""Bring an audit database to the current schema with Alembic (same migrations on SQLite and Postgres)."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from sqlalchemy import Column, MetaData, PrimaryKeyConstraint, String, Table, column, inspect, select, table
from sqlalchemy.engine import Engine

from flotilla.audit.schema import VERSION_TABLE, metadata

__all__ = ["upgrade", "head_revision"]

_SCRIPTS = Path(__file__).with_name("migrations")
_REVISION = re.compile(r"""^(down_revision|revision)\s*=\s*(None|["'][^"']+["'])""", re.MULTILINE)


def upgrade(engine: Engine, revision: str = "head") -> None:
    # Every process opening the store lands here; Alembic (+~10 MB of modules) loads only when
    # there is a migration to run: not for a store at head, nor for a new one (created at head).
    head = head_revision()
    if revision == "head" and head is not None:
        if _current_revision(engine) == head or _created_at_head(engine, head):
            return
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


@cache
def head_revision() -> str | None:
    """The newest migration's revision, read from the scripts' `revision`/`down_revision` lines
    (None unless they form one line of history: Alembic then decides, and explains)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in (_SCRIPTS / "versions").glob("*.py"):
        found = dict(_REVISION.findall(script.read_text(encoding="utf-8")))
        if "revision" in found:
            revisions.add(found["revision"].strip("\"'"))
            if found.get("down_revision", "None") != "None":
                parents.add(found["down_revision"].strip("\"'"))
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def _created_at_head(engine: Engine, head: str) -> bool:
    """A database without the audit tables gets them as the migrations leave them (`metadata`:
    tests/audit/test_store.py checks the two agree) and Alembic's version table stamped at `head`.
    False when the tables exist (another process may have made them): Alembic decides."""
    with engine.begin() as conn:
        existing = inspect(conn)
        if existing.has_table(VERSION_TABLE) or any(existing.has_table(name) for name in metadata.tables):
            return False
        metadata.create_all(conn)
        # Alembic's own definition of its version table (DefaultImpl.version_table_impl, alembic/ddl/impl.py).
        version = Table(VERSION_TABLE, MetaData(), Column("version_num", String(32), nullable=False),
                        PrimaryKeyConstraint("version_num", name=f"{VERSION_TABLE}_pkc"))
        version.create(conn)
        conn.execute(version.insert().values(version_num=head))
    return True


def _current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        if not inspect(conn).has_table(VERSION_TABLE):
            return None
        return conn.execute(select(column("version_num")).select_from(table(VERSION_TABLE))).scalar()
