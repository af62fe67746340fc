"""The audit store: an append-only, hash-chained log of runs, spans, rail decisions, approvals
and config changes, on SQLite (default) or PostgreSQL through SQLAlchemy Core.

Appends are serialised (a process lock plus `BEGIN IMMEDIATE` on SQLite or a transaction-level
advisory lock on Postgres), so the chain stays one line even with several writers. A batch
is one transaction: the chain is computed in order, the rows go in with one executemany, the
signed head and the per-run summaries are updated, and it commits once. Appends from several
threads at once share a transaction (group commit, `group_commit.py`): one fsync for all.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, bindparam, create_engine, delete, event, func, insert, select, text, update
from sqlalchemy.engine import Engine, make_url

from flotilla.audit import migrate
from flotilla.audit.chain import GENESIS, ChainRecord, SignedMark, VerifyReport, canonical_json, record_hash, sign_mark, verify_chain
from flotilla.audit.errors import FlotillaError
from flotilla.audit.group_commit import GroupCommit
from flotilla.audit.sanitize import Sanitizer
from flotilla.audit.schema import anchors, head, records, run_summaries
from flotilla.audit.summaries import RunSummary, empty_summary, fold_run_event, fold_span

__all__ = ["AuditStore", "NewRecord", "StoredRecord", "AuditStoreError", "RECORD_KINDS", "utc_iso"]

RECORD_KINDS = frozenset({"span", "rail", "run", "approval", "config", "checkpoint"})
_PG_LOCK_KEY = 0x466C6F74  # "Flot": the advisory lock that serialises appends across processes
_LIST_FIELDS = ("models", "tools", "agents")


class AuditStoreError(FlotillaError):
    """The audit store cannot be opened or written (bad URL, unreachable database, bad record)."""

    code = "audit_store"


def utc_iso(moment: datetime | None = None) -> str:
    """Fixed-width UTC ISO time, so text comparison orders it (the same in SQLite and Postgres)."""
    moment = moment or datetime.now(UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class NewRecord:
    kind: str
    payload: dict[str, Any]
    run_id: str | None = None


@dataclass(frozen=True, slots=True)
class StoredRecord:
    seq: int
    kind: str
    run_id: str | None
    recorded_at: str
    payload: dict[str, Any]
    hash: str
    prev_hash: str


@dataclass(frozen=True, slots=True)
class PruneReport:
    before: str
    pruned: int
    through_seq: int | None
    runs_removed: list[str] = field(default_factory=list)
    """Finished runs whose records were pruned (their LangGraph checkpoints may go too)."""


class AuditStore:
    """Open (and migrate) the store at `url`; `hmac_key` signs the chain head and prune anchors."""

    def __init__(
        self,
        url: str,
        *,
        hmac_key: bytes | str | None = None,
        sanitizer: Sanitizer | None = None,
        migrate_schema: bool = True,
    ) -> None:
        self.url = url
        self.sanitizer = sanitizer or Sanitizer()
        """Scrubs secrets from records appended with `record()` (spans are sanitized by the exporter)."""
        self.hmac_key = hmac_key.encode() if isinstance(hmac_key, str) else hmac_key
        try:
            self.engine = _engine(url)
            if migrate_schema:
                migrate.upgrade(self.engine)
        except FlotillaError:
            raise
        except Exception as exc:
            raise AuditStoreError(f"cannot open the audit store at {_safe_url(url)}: {exc}") from None
        self._lock = threading.Lock()
        # Appends from the exporter and every run's start/finish share commits (one fsync each group).
        self._group = GroupCommit(self._write)
        self._before_reads: list[Callable[[], None]] = []
        event.listen(self.engine, "engine_connect", self._settle_before_read)

    def settle_before_reads(self, settle: Callable[[], None]) -> None:
        """`settle()` runs before each read of the store in this process: records appended in the
        background (a run's `run` records) are in the chain before anyone here reads it."""
        self._before_reads.append(settle)

    def _settle_before_read(self, conn: Connection) -> None:
        if not conn.get_execution_options().get("audit_write"):
            for settle in self._before_reads:
                settle()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()

    # -- writing -------------------------------------------------------------------------

    def append(self, new: Sequence[NewRecord]) -> int:
        """Append records in order, in one transaction; returns the last sequence number."""
        for rec in new:
            if rec.kind not in RECORD_KINDS:
                raise AuditStoreError(f"unknown audit record kind {rec.kind!r}; use one of {sorted(RECORD_KINDS)}")
        try:
            return self._group.run(lambda conn: self._append(conn, new))
        except FlotillaError:
            raise
        except Exception as exc:  # this caller's records only: the rest of its group committed
            raise AuditStoreError(f"audit store write failed ({_safe_url(self.url)}): {exc}") from exc

    def record(self, kind: str, payload: dict[str, Any], *, run_id: str | None = None) -> int:
        """Append one record: an approval, a config change (e.g. a tool re-approval), a run event."""
        return self.record_many([(kind, payload, run_id)])

    def record_many(self, entries: Sequence[tuple[str, dict[str, Any], str | None]]) -> int:
        """Append (kind, payload, run_id) records in order, in one transaction (as `record` does one)."""
        return self.append([NewRecord(kind, _scrubbed(payload, self.sanitizer), run_id) for kind, payload, run_id in entries])

    def append_missing(self, find: Callable[[Connection], Sequence[NewRecord]]) -> int:
        """Append the records `find(conn)` says are missing, checked inside the same write
        transaction (serialised with every other append), so two processes repairing one gap
        append it once (graphs/record_repair.py)."""
        def write(conn: Connection) -> int:
            return self._append(conn, [NewRecord(r.kind, _scrubbed(r.payload, self.sanitizer), r.run_id) for r in find(conn)])

        return self._group.run(write)

    def _append(self, conn: Connection, new: Sequence[NewRecord]) -> int:
        current = conn.execute(_HEAD_NOW).first()
        seq, prev = (current.seq, current.hash) if current else (0, GENESIS)
        if not new:
            return seq
        now = utc_iso()
        rows = []
        for rec in new:
            seq += 1
            payload = canonical_json(rec.payload)
            digest = record_hash(seq, rec.kind, rec.run_id, now, payload, prev)
            rows.append({"seq": seq, "kind": rec.kind, "run_id": rec.run_id, "recorded_at": now,
                         "payload": payload, "prev_hash": prev, "hash": digest})
            prev = digest
        conn.execute(_INSERT_RECORDS, rows)
        mark = sign_mark(SignedMark("head", seq, prev, now), self.hmac_key)
        values = {"seq": mark.seq, "hash": mark.hash, "recorded_at": mark.recorded_at, "signature": mark.signature}
        if current is None:
            conn.execute(_INSERT_HEAD, {"id": 1, **values})
        else:
            conn.execute(_UPDATE_HEAD, values)
        self._update_summaries(conn, new, rows)
        return seq

    def _update_summaries(self, conn: Connection, new: Sequence[NewRecord], rows: list[dict[str, Any]]) -> None:
        touched: dict[str, list[tuple[NewRecord, int]]] = {}
        for rec, row in zip(new, rows):
            if rec.run_id and rec.kind in ("span", "run"):
                touched.setdefault(rec.run_id, []).append((rec, row["seq"]))
        if not touched:
            return
        existing = {
            r["run_id"]: _summary_from_row(r)
            for r in conn.execute(_SUMMARIES_OF, {"run_ids": list(touched)}).mappings()
        }
        inserts, updates = [], []
        for run_id, items in touched.items():
            summary = existing.get(run_id) or empty_summary(run_id)
            for rec, seq in items:
                if rec.kind == "span":
                    fold_span(summary, rec.payload)
                else:
                    fold_run_event(summary, rec.payload)
                summary["last_seq"] = seq
            row = _summary_to_row(summary)
            (updates if run_id in existing else inserts).append(row)
        if inserts:
            conn.execute(_INSERT_SUMMARIES, inserts)
        if updates:
            conn.execute(_summary_update(tuple(updates[0])), [{f"v_{k}": v for k, v in row.items()} for row in updates])

    # -- reading -------------------------------------------------------------------------

    def head(self) -> SignedMark | None:
        with self.engine.connect() as conn:
            return _head(conn)

    def anchor(self) -> SignedMark | None:
        with self.engine.connect() as conn:
            return _anchor(conn)

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(records)).scalar_one())

    def iter_chain(self, conn: Connection, *, batch: int = 20_000, after_seq: int | None = None) -> Iterator[tuple[Any, ...]]:
        """Every record in seq order as plain tuples (ChainRecord field order), streamed in batches.

        Uses the driver cursor directly (a server-side cursor on Postgres): verify reads every
        record, and per-row Row objects would double its cost.
        """
        where = "" if after_seq is None else f" WHERE seq > {int(after_seq)}"
        sql = f"SELECT seq, kind, run_id, recorded_at, payload, prev_hash, hash FROM audit_records{where} ORDER BY seq"
        dbapi = conn.connection.dbapi_connection
        cursor = dbapi.cursor(name="flotilla_audit_verify") if self.dialect == "postgresql" else dbapi.cursor()
        try:
            cursor.execute(sql)
            while rows := cursor.fetchmany(batch):
                yield from rows
        finally:
            cursor.close()

    def run_records(self, run_id: str) -> list[StoredRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(records).where(records.c.run_id == run_id).order_by(records.c.seq)).all()
        return [StoredRecord(r.seq, r.kind, r.run_id, r.recorded_at, json.loads(r.payload), r.hash, r.prev_hash) for r in rows]

    def run_summary(self, run_id: str) -> RunSummary | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(run_summaries).where(run_summaries.c.run_id == run_id)).mappings().first()
        return None if row is None else _summary_from_row(row)

    def verify(self, *, pinned: SignedMark | None = None, after: tuple[int, str] | None = None) -> VerifyReport:
        """Check the chain in one consistent snapshot; names the first broken record.

        `after=(seq, hash)`: only the records after a point a previous full verify vouched for.
        """
        with self.engine.connect() as conn:
            if self.dialect == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                current, anchor = _head(conn), _anchor(conn)
                if after is not None and anchor is not None and anchor.seq >= after[0]:
                    after = None  # pruned past the point vouched for: check everything that is left
                rows = self.iter_chain(conn, after_seq=after[0] if after else None)
                return verify_chain(rows, head=current, anchor=anchor, key=self.hmac_key, pinned=pinned, after=after)

    # -- retention -----------------------------------------------------------------------

    def prune(self, before: datetime) -> PruneReport:
        """Remove records older than `before` (a prefix of the chain) and leave a signed checkpoint."""
        cutoff = utc_iso(before)
        with self._write() as conn:
            last = conn.execute(select(func.max(records.c.seq)).where(records.c.recorded_at < cutoff)).scalar()
            if last is None:
                return PruneReport(cutoff, 0, None)
            last_hash = conn.execute(select(records.c.hash).where(records.c.seq == last)).scalar_one()
            finished = [
                r.run_id
                for r in conn.execute(
                    select(run_summaries.c.run_id, run_summaries.c.status).where(run_summaries.c.last_seq <= last)
                )
                if r.status not in (None, "running", "interrupted", "pending", "waiting_approval")
            ]
            pruned = conn.execute(delete(records).where(records.c.seq <= last)).rowcount
            conn.execute(delete(run_summaries).where(run_summaries.c.last_seq <= last))
            now = utc_iso()
            mark = sign_mark(SignedMark("anchor", last, last_hash, now, extra={"pruned": pruned, "before": cutoff}), self.hmac_key)
            conn.execute(insert(anchors).values(seq=last, hash=last_hash, recorded_at=now, pruned=pruned, before=cutoff,
                                                signature=mark.signature))
            self._append(conn, [NewRecord("checkpoint", {"event": "prune", "before": cutoff, "pruned": pruned,
                                                         "through_seq": last, "anchor_hash": last_hash})])
        return PruneReport(cutoff, pruned, last, finished)

    # -- internals -----------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._lock:
            try:
                with self.engine.execution_options(audit_write=True).begin() as conn:
                    if self.dialect == "postgresql":
                        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
                    yield conn
            except FlotillaError:
                raise
            except Exception as exc:
                raise AuditStoreError(f"audit store write failed ({_safe_url(self.url)}): {exc}") from exc


def _engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # pysqlite's own transaction handling is switched off; "begin" below emits BEGIN itself,
        # IMMEDIATE for writes so the chain head is read under the write lock.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA secure_delete=ON")  # pruned records leave no bytes behind in the file
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("audit_write") else "BEGIN")

    return engine


# An append's statements, built once: building and cache-keying them cost more CPU than SQLite's own work.
_HEAD_NOW = select(head.c.seq, head.c.hash).where(head.c.id == 1)
_INSERT_RECORDS = insert(records)
_INSERT_HEAD = insert(head)
_UPDATE_HEAD = update(head).where(head.c.id == 1)
_SUMMARIES_OF = select(run_summaries).where(run_summaries.c.run_id.in_(bindparam("run_ids", expanding=True)))
_INSERT_SUMMARIES = insert(run_summaries)


@functools.cache
def _summary_update(columns: tuple[str, ...]) -> Any:
    values = {c: bindparam(f"v_{c}") for c in columns if c != "run_id"}
    return update(run_summaries).where(run_summaries.c.run_id == bindparam("v_run_id")).values(values)


def _head(conn: Connection) -> SignedMark | None:
    row = conn.execute(select(head).where(head.c.id == 1)).first()
    return None if row is None else SignedMark("head", row.seq, row.hash, row.recorded_at, row.signature)


def _anchor(conn: Connection) -> SignedMark | None:
    row = conn.execute(select(anchors).order_by(anchors.c.id.desc()).limit(1)).first()
    if row is None:
        return None
    return SignedMark("anchor", row.seq, row.hash, row.recorded_at, row.signature, {"pruned": row.pruned, "before": row.before})


def _summary_from_row(row: Any) -> RunSummary:
    summary = dict(row)
    for key in _LIST_FIELDS:
        summary[key] = json.loads(summary[key] or "[]")
    summary["escalated"] = bool(summary["escalated"])
    return summary


def _summary_to_row(summary: RunSummary) -> dict[str, Any]:
    row = dict(summary)
    for key in _LIST_FIELDS:
        row[key] = json.dumps(sorted(summary[key]))
    return row


def _scrubbed(value: Any, sanitizer: Sanitizer) -> Any:
    if isinstance(value, str):
        return sanitizer.scrub(value)
    if isinstance(value, dict):
        return {k: "[REDACTED]" if sanitizer.secret_key(str(k)) else _scrubbed(v, sanitizer) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrubbed(v, sanitizer) for v in value]
    return value


def _safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable URL>"
