"""The ledger's write tools, served with `--writable`: each honours an idempotency key.

A caller puts a key in the request `_meta` (`flotilla.dev/idempotency-key`; flotilla does it for
every call, tools/idempotency.py). The first call with a key writes and stores its result under
the key in the same transaction; any later call with that key writes nothing and returns the
stored result — so a step re-run after a crash, or a call re-sent after a dropped connection,
never records twice. The same key with different arguments is refused (it is a caller bug).

The tools say so in their `_meta` (`flotilla.dev/honours-idempotency-key: true`), and their
annotations are honest: not read-only, not idempotent (two calls without a key are two rows),
not destructive (they only add rows). Key and result live in this database, so they survive a
restart of the server; `BEGIN IMMEDIATE` makes the check-and-write atomic across processes.

Count the writes in the ledger database: `SELECT count(*) FROM triage_decisions` (one row per
decision recorded; `idempotency_key` says which call wrote it).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations

from flotilla.tools.idempotency import HONOURS_KEYS_META, IDEMPOTENCY_META_KEY

__all__ = ["WRITE_SCHEMA", "KeyedWriter", "add_write_tools"]

WRITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS triage_decisions (
  decision_id     INTEGER PRIMARY KEY AUTOINCREMENT,
  invoice_number  TEXT NOT NULL,
  vendor          TEXT,
  decision        TEXT NOT NULL CHECK (decision IN ('approve', 'hold', 'reject')),
  total           NUMERIC,
  note            TEXT,
  idempotency_key TEXT UNIQUE,
  recorded_at     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency_keys (
  idempotency_key  TEXT PRIMARY KEY,
  tool             TEXT NOT NULL,
  arguments_sha256 TEXT NOT NULL,
  result           TEXT NOT NULL,
  created_at       TEXT NOT NULL
);
"""

WRITE = ToolAnnotations(read_only_hint=False, idempotent_hint=False, destructive_hint=False, open_world_hint=False)
HONOURS_KEYS = {HONOURS_KEYS_META: True}


class KeyedWriter:
    """One read-write connection; `once()` runs a write at most once per idempotency key."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")  # a returned result is on disk with its key
        self.conn.executescript(WRITE_SCHEMA)
        self._lock = threading.Lock()

    def read(self, sql: str, *params: Any) -> list[sqlite3.Row]:
        with self._lock:  # one connection, shared by the server's worker threads
            return self.conn.execute(sql, params).fetchall()

    def once(self, key: str | None, tool: str, arguments: dict[str, Any], write: Callable[[sqlite3.Connection], dict[str, Any]]) -> dict[str, Any]:
        digest = hashlib.sha256(json.dumps(arguments, sort_keys=True, default=str).encode()).hexdigest()
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")  # the write lock first: check-then-write is atomic
            try:
                if key:
                    seen = self.conn.execute(
                        "SELECT tool, arguments_sha256, result FROM idempotency_keys WHERE idempotency_key = ?", (key,)
                    ).fetchone()
                    if seen is not None:
                        self.conn.execute("ROLLBACK")
                        if (seen["tool"], seen["arguments_sha256"]) != (tool, digest):
                            raise ToolError(f"idempotency key {key} was first used for a different call ({seen['tool']}); use a new key")
                        return {**json.loads(seen["result"]), "replayed": True}
                result = write(self.conn)
                if key:
                    self.conn.execute(
                        "INSERT INTO idempotency_keys VALUES (?, ?, ?, ?, ?)",
                        (key, tool, digest, json.dumps(result), datetime.now(UTC).isoformat()),
                    )
                self.conn.execute("COMMIT")
                return {**result, "replayed": False}
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise


def _key(ctx: Context) -> str | None:
    meta = ctx.request_context.meta or {}
    value = meta.get(IDEMPOTENCY_META_KEY)  # type: ignore[call-overload]
    return str(value) if value else None


def add_write_tools(server: MCPServer, db_path: Path) -> KeyedWriter:
    writer = KeyedWriter(db_path)

    @server.tool(annotations=WRITE, meta=HONOURS_KEYS)
    def record_decision(
        invoice_number: str,
        decision: Literal["approve", "hold", "reject"],
        ctx: Context,
        vendor: str | None = None,
        total: float | None = None,
        note: str | None = None,
    ) -> dict[str, Any]:
        """Record the triage decision on a received invoice (approve / hold / reject) in the ledger.

        Returns decision_id and recorded_at. Honours the request's idempotency key: a repeated
        key returns the first result (with replayed: true) and records nothing new.
        """
        key = _key(ctx)
        args = {"invoice_number": invoice_number, "decision": decision, "vendor": vendor, "total": total, "note": note}

        def write(conn: sqlite3.Connection) -> dict[str, Any]:
            recorded_at = datetime.now(UTC).isoformat()
            cursor = conn.execute(
                "INSERT INTO triage_decisions (invoice_number, vendor, decision, total, note, idempotency_key, recorded_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (invoice_number.strip().upper(), vendor, decision, total, note, key, recorded_at),
            )
            return {"decision_id": cursor.lastrowid, "invoice_number": invoice_number.strip().upper(), "decision": decision, "recorded_at": recorded_at}

        return writer.once(key, "record_decision", args, write)

    @server.tool(annotations=ToolAnnotations(read_only_hint=True, idempotent_hint=True, destructive_hint=False, open_world_hint=False))
    def list_decisions(invoice_number: str) -> dict[str, Any]:
        """List the triage decisions recorded for an invoice number, oldest first."""
        rows = writer.read(
            "SELECT decision_id, invoice_number, vendor, decision, total, note, recorded_at FROM triage_decisions "
            "WHERE invoice_number = ? ORDER BY decision_id",
            invoice_number.strip().upper(),
        )
        return {"decisions": [dict(r) for r in rows], "count": len(rows)}

    return writer
