"""Audit test fixtures: a throwaway PostgreSQL cluster, and one store fixture over SQLite and Postgres."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from flotilla.audit.store import AuditStore
from tests.audit.pg import PostgresUnavailable, new_database, throwaway_postgres

os.environ.setdefault("HF_HUB_OFFLINE", "1")

HMAC_KEY = b"test-audit-key-not-a-real-secret"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """A PostgreSQL 15 cluster in a temp dir on a free port, for the whole session; yields its URL."""
    try:
        with throwaway_postgres() as url:
            yield url
    except PostgresUnavailable as exc:
        pytest.fail(str(exc))


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'audit.sqlite'}"
    return new_database(request.getfixturevalue("pg_server"))


@pytest.fixture
def store(store_url: str) -> Iterator[AuditStore]:
    s = AuditStore(store_url, hmac_key=HMAC_KEY)
    yield s
    s.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[AuditStore]:
    s = AuditStore(f"sqlite:///{tmp_path / 'audit.sqlite'}", hmac_key=HMAC_KEY)
    yield s
    s.close()


@pytest.fixture(scope="session")
def output_dir() -> Path:
    out = Path(__file__).resolve().parents[2] / "test-output" / "audit"
    out.mkdir(parents=True, exist_ok=True)
    return out
