"""The runner's LangGraph checkpointer, chosen by configuration (`checkpoint_url`).

    a file path or sqlite:///PATH   AsyncSqliteSaver (the `local` backend's default; WAL, commits
                                     not fsync'd: see open_checkpointer)
    postgresql://… (postgres://…,    AsyncPostgresSaver from langgraph-checkpoint-postgres, its
    postgresql+psycopg://…)          tables created by `setup()` (the `postgres` backend)

Either way the runner opens ONE saver per process under a lock and reuses it across runs.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from flotilla.audit.errors import ConfigError, MissingExtra

__all__ = ["open_checkpointer", "is_postgres_url", "psycopg_conninfo", "abandon"]

_POSTGRES_PREFIXES = ("postgresql://", "postgres://", "postgresql+psycopg://")


def is_postgres_url(url: str | Path | None) -> bool:
    return isinstance(url, str) and url.startswith(_POSTGRES_PREFIXES)


def psycopg_conninfo(url: str) -> str:
    """psycopg takes a libpq URL: the SQLAlchemy driver suffix (`+psycopg`) the audit store uses goes."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _sqlite_path(url: str | Path) -> Path:
    text = str(url)
    if text.startswith("sqlite:///"):
        return Path(text.removeprefix("sqlite:///"))
    if "://" in text:
        raise ConfigError(f"checkpoint_url {text!r} is neither a SQLite path (or sqlite:///PATH) nor postgresql://…")
    return Path(text)


async def open_checkpointer(url: str | Path) -> tuple[AbstractAsyncContextManager[Any], Any]:
    """Open the saver `url` names; returns (its context manager, to exit on close; the saver)."""
    if is_postgres_url(url):
        MissingExtra.require("the Postgres checkpointer", "postgres", "psycopg", "langgraph.checkpoint.postgres")
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

        cm = AsyncPostgresSaver.from_conn_string(psycopg_conninfo(str(url)))
        try:
            saver = await cm.__aenter__()
        except Exception as exc:  # psycopg.OperationalError: a server that is down, a bad password, …
            raise ConfigError(f"cannot connect the Postgres checkpointer ({_without_password(str(url))}): {exc}".strip()) from None
        await saver.setup()  # creates or migrates its tables; idempotent
        return cm, saver
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    path = _sqlite_path(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    cm = AsyncSqliteSaver.from_conn_string(str(path))
    saver = await cm.__aenter__()
    await saver.conn.execute("PRAGMA secure_delete=ON")  # deleted checkpoints leave no bytes behind
    # A checkpoint commit is written to the log but not fsync'd (WAL with synchronous=NORMAL): a
    # killed process loses none (the OS has the write), a power cut may roll back the last ones, so
    # the run resumes a step or two earlier (steps run at least once; side-effecting tool calls
    # are journalled with FULL sync). Nine fsyncs a four-step run were most of its disk wait.
    # The run's records (run store, audit chain) stay fsync'd.
    await saver.conn.execute("PRAGMA journal_mode=WAL")  # as the saver's setup() sets it; NORMAL is safe only with WAL
    await saver.conn.execute("PRAGMA synchronous=NORMAL")
    return cm, saver


def abandon(saver: Any) -> None:
    """Drop a saver whose event loop is gone: stop aiosqlite's worker thread; a psycopg connection
    bound to a dead loop cannot be closed from another, so it is left to the garbage collector."""
    stop = getattr(getattr(saver, "conn", None), "stop", None)
    if callable(stop):
        stop()


def _without_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 — only for the message
        return "postgresql://…"
