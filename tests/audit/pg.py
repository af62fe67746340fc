"""A throwaway PostgreSQL cluster (initdb + pg_ctl from Debian's postgresql-15) in a temp dir."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PG_BIN = Path(os.environ.get("FLOTILLA_PG_BIN", "/usr/lib/postgresql/15/bin"))


class PostgresUnavailable(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_cluster_owner(cmd: list[str]) -> list[str]:
    # initdb refuses to run as root: run the server tools as the `postgres` system user
    # that Debian's postgresql package creates.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@contextmanager
def throwaway_postgres(*, durable: bool = False) -> Iterator[str]:
    """Start a cluster on a free 127.0.0.1 port; yields `postgresql+psycopg://postgres@127.0.0.1:PORT`.

    `durable=False` turns fsync off (tests); benchmarks keep the defaults.
    """
    if not (PG_BIN / "initdb").exists():
        raise PostgresUnavailable(f"PostgreSQL server binaries not found in {PG_BIN}: run `make setup-test` (apt package postgresql-15)")
    root = Path(tempfile.mkdtemp(prefix="flotilla-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    data, port = root / "data", _free_port()

    def run(*cmd: object) -> None:
        done = subprocess.run(_as_cluster_owner([str(c) for c in cmd]), capture_output=True, text=True)
        if done.returncode != 0:
            raise PostgresUnavailable(f"{cmd[0]} failed: {done.stderr.strip() or done.stdout.strip()}")

    try:
        run(PG_BIN / "initdb", "-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
        opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
        if not durable:
            opts += " -c fsync=off -c full_page_writes=off -c synchronous_commit=off"
        run(PG_BIN / "pg_ctl", "-D", data, "-o", opts, "-l", root / "log", "-w", "start")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(_as_cluster_owner([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def new_database(server: str) -> str:
    """A fresh, empty database on the cluster; returns its URL."""
    import uuid

    import sqlalchemy as sa

    name = f"audit_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return f"{server}/{name}"
