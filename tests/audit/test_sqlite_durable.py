"""The durability pragmas the run store and the tool-call journal set on each SQLite connection."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine

from flotilla.audit.runs import RunStore
from flotilla.audit.sqlite_durable import durable_sqlite
from flotilla.tools.journal import ToolCallJournal


def _pragmas(engine, *names: str) -> dict[str, object]:
    with engine.connect() as conn:
        return {name: conn.exec_driver_sql(f"PRAGMA {name}").scalar() for name in names}


def test_a_file_database_gets_wal_full_sync_and_the_options_asked_for(tmp_path: Path) -> None:
    engine = durable_sqlite(create_engine(f"sqlite:///{tmp_path / 'a.db'}"), secure_delete=True, busy_timeout_ms=7000)
    # synchronous FULL is 2; secure_delete on is 1
    assert _pragmas(engine, "journal_mode", "synchronous", "secure_delete", "busy_timeout") == {"journal_mode": "wal", "synchronous": 2, "secure_delete": 1, "busy_timeout": 7000}
    engine.dispose()


def test_an_in_memory_database_keeps_its_memory_journal() -> None:
    engine = durable_sqlite(create_engine("sqlite://"))
    assert _pragmas(engine, "journal_mode", "synchronous") == {"journal_mode": "memory", "synchronous": 2}
    engine.dispose()


def test_the_run_store_and_the_journal_share_one_file_with_their_own_options(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    runs, journal = RunStore(url), ToolCallJournal(url)
    assert _pragmas(runs.engine, "journal_mode", "synchronous", "secure_delete") == {"journal_mode": "wal", "synchronous": 2, "secure_delete": 1}
    assert _pragmas(journal.engine, "journal_mode", "synchronous", "busy_timeout") == {"journal_mode": "wal", "synchronous": 2, "busy_timeout": 10000}
    journal.close()
    runs.engine.dispose()
