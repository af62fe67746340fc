"""Retention: `flotilla audit prune --before DATE` leaves nothing older than DATE in any store
flotilla writes, except the signed checkpoint from which the rest of the chain verifies.

    audit store   the records before DATE (always a prefix of the chain)       AuditStore.prune
    run store     finished runs that ended before DATE (input, steps, output)  RunStore.prune
    checkpoints   the LangGraph threads of the runs pruned, and threads no     prune_checkpoints
                  store knows any more whose newest checkpoint is older
    trace file    span lines that ended before DATE, in every rotated file     prune_trace_files
    audit spool   records spooled (store unreachable) before DATE              prune_spool

Unfinished runs (running, waiting for approval) keep their run record and checkpoint whatever
their age: the report names them. Each kind of removal is itself appended to the chain as a
`checkpoint` record. The checkpointer is any LangGraph saver (`delete_thread` and `list` are
part of its base interface), handed in as a factory: SQLite here, Postgres the same way.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from flotilla.audit.exporter import prune_spool
from flotilla.audit.runs import RunStore
from flotilla.audit.store import AuditStore, PruneReport
from flotilla.audit.trace_file import TracePruneReport, prune_trace_files

if TYPE_CHECKING:
    from langgraph.checkpoint.base import BaseCheckpointSaver

__all__ = ["RetentionReport", "Checkpointer", "prune", "prune_checkpoints", "sqlite_checkpointer"]

Checkpointer = Callable[[], AbstractContextManager["BaseCheckpointSaver"]]
"""Opens the LangGraph checkpointer retention prunes (e.g. `sqlite_checkpointer(path)`, or
`lambda: PostgresSaver.from_conn_string(url)`)."""


@dataclass(frozen=True, slots=True)
class RetentionReport:
    audit: PruneReport
    runs_removed: list[str] = field(default_factory=list)
    unfinished_kept: list[str] = field(default_factory=list)
    """Runs started before the cut-off that are still running or waiting: never pruned."""
    checkpoint_threads: list[str] = field(default_factory=list)
    traces: TracePruneReport = TracePruneReport(0, 0)
    spool_records: int = 0

    @property
    def removed_anything(self) -> bool:
        return bool(self.audit.pruned or self.runs_removed or self.checkpoint_threads or self.traces.lines or self.spool_records)


def sqlite_checkpointer(path: Path) -> Checkpointer:
    """The default checkpointer (`<data_dir>/checkpoints.sqlite`), deleting with secure_delete so no bytes stay behind."""

    @contextmanager
    def open_saver() -> Iterator[BaseCheckpointSaver]:
        from langgraph.checkpoint.sqlite import SqliteSaver

        conn = sqlite3.connect(path, check_same_thread=False)
        try:
            conn.execute("PRAGMA secure_delete=ON")
            yield SqliteSaver(conn)
        finally:
            conn.close()

    return open_saver


def prune_checkpoints(
    saver: BaseCheckpointSaver,
    thread_ids: Iterable[str],
    *,
    older_than: datetime | None = None,
    keep: Callable[[str], bool] = lambda _thread: False,
) -> list[str]:
    """Delete the checkpoints (and pending writes) of these threads, and with `older_than` of every
    thread whose newest checkpoint is older and that `keep` does not claim; returns the threads removed."""
    wanted = dict.fromkeys(thread_ids)
    newest: dict[str, datetime] = {}
    for item in saver.list(None):
        thread = item.config["configurable"]["thread_id"]
        ts = _parse_ts(item.checkpoint.get("ts"))
        if thread not in newest or ts > newest[thread]:
            newest[thread] = ts
    if older_than is not None:
        cutoff = _utc(older_than)
        wanted.update(dict.fromkeys(t for t, ts in newest.items() if ts < cutoff and t not in wanted and not keep(t)))
    removed = [thread for thread in wanted if thread in newest]
    for thread in removed:
        saver.delete_thread(thread)
    return removed


def prune(
    store: AuditStore,
    before: datetime,
    *,
    runs: RunStore | None = None,
    checkpoints: Checkpointer | None = None,
    traces: Path | None = None,
    spool: Path | None = None,
) -> RetentionReport:
    """Prune every store given; see the module docstring for what each keeps."""
    report = store.prune(before)
    removed_runs, unfinished_kept = runs.prune(before) if runs is not None else ([], [])
    if removed_runs:
        store.record("checkpoint", {"event": "prune_runs", "before": report.before, "runs": removed_runs})
    threads: list[str] = []
    if checkpoints is not None:
        unfinished = runs.unfinished() if runs is not None else set()

        def keep(thread: str) -> bool:  # still going, or a run some store still holds
            if thread in unfinished:
                return True
            return (runs is not None and runs.get_run(thread) is not None) or store.run_summary(thread) is not None

        with checkpoints() as saver:
            candidates = [t for t in (*removed_runs, *report.runs_removed) if t not in unfinished]
            threads = prune_checkpoints(saver, candidates, older_than=before, keep=keep)
        if threads:
            store.record("checkpoint", {"event": "prune_langgraph_checkpoints", "before": report.before, "threads": threads})
    trace_report = prune_trace_files(traces, before) if traces is not None else TracePruneReport(0, 0)
    if trace_report.lines:
        store.record("checkpoint", {"event": "prune_traces", "before": report.before, "lines": trace_report.lines, "files": trace_report.files})
    spooled = prune_spool(spool, before) if spool is not None else 0
    if spooled:
        store.record("checkpoint", {"event": "prune_audit_spool", "before": report.before, "records": spooled})
    _checkpoint_wal(store)
    return RetentionReport(report, removed_runs, unfinished_kept, threads, trace_report, spooled)


def _checkpoint_wal(store: AuditStore) -> None:
    """SQLite: move the (zeroed) pages out of the write-ahead log now, so the removed bytes leave the
    database file at once rather than at some later checkpoint."""
    if store.dialect != "sqlite":
        return
    raw = store.engine.raw_connection()
    try:
        raw.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        raw.close()


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _parse_ts(value: object) -> datetime:
    try:
        return _utc(datetime.fromisoformat(str(value)))
    except ValueError:  # no readable time: treat as old, it cannot prove otherwise
        return datetime.min.replace(tzinfo=UTC)
