"""Durable SQLite connections for the stores that share the run store's database file.

The run store (audit/runs.py) and the tool-call journal (tools/journal.py) both need a commit
on disk before they answer: write-ahead log (a commit is one fsync of the log, and readers never
block the writer) with synchronous=FULL. Other engines (PostgreSQL) are left as they are.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

__all__ = ["durable_sqlite"]


def durable_sqlite(engine: Engine, *, secure_delete: bool = False, busy_timeout_ms: int | None = None) -> Engine:
    """Set the durability pragmas on every new connection of a SQLite `engine`; returns `engine`.

    `secure_delete` overwrites deleted rows with zeros (retention really removes the bytes);
    `busy_timeout_ms` makes a writer wait that long, not fail, while another holds the lock."""
    if engine.dialect.name != "sqlite":
        return engine

    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        if secure_delete:
            dbapi_conn.execute("PRAGMA secure_delete=ON")
        if dbapi_conn.execute("PRAGMA database_list").fetchone()[2]:  # a file, not :memory:
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
        dbapi_conn.execute("PRAGMA synchronous=FULL")
        if busy_timeout_ms is not None:
            dbapi_conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")

    event.listen(engine, "connect", on_connect)
    return engine
