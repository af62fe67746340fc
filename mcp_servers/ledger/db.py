"""The ledger's SQLite database: built from seed.sql, then opened read-only."""

from __future__ import annotations

import sqlite3
from pathlib import Path

__all__ = ["SEED_SQL", "build_database", "connect_read_only"]

SEED_SQL = Path(__file__).with_name("seed.sql")


def build_database(path: Path, seed: Path = SEED_SQL) -> Path:
    """Create (or replace) the database at `path` from the seed script."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    with sqlite3.connect(tmp) as conn:
        conn.executescript(seed.read_text(encoding="utf-8"))
    conn.close()
    tmp.replace(path)
    return path


def connect_read_only(path: Path) -> sqlite3.Connection:
    # `mode=ro`: the tools are read-only by contract, and the database enforces it.
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    return conn
