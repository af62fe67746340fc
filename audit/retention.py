"""Retention: prune the audit chain before a date and the LangGraph checkpoints of finished runs.

LangGraph keeps every checkpoint of every thread forever (thread_id == run_id here); once a
run is finished and past the window its checkpoints only grow the file. They are removed with
the saver's own `delete_thread`, and the removal itself is written to the chain.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from flotilla.audit.store import AuditStore, PruneReport

__all__ = ["RetentionReport", "prune", "prune_checkpoints"]


@dataclass(frozen=True, slots=True)
class RetentionReport:
    audit: PruneReport
    checkpoint_threads: list[str]


def prune_checkpoints(path: Path, thread_ids: Iterable[str]) -> list[str]:
    """Delete the LangGraph checkpoints (and pending writes) of these threads; returns those that existed."""
    ids = list(dict.fromkeys(thread_ids))
    if not ids or not path.is_file():
        return []
    from langgraph.checkpoint.sqlite import SqliteSaver

    conn = sqlite3.connect(path, check_same_thread=False)
    try:
        saver = SqliteSaver(conn)
        removed = []
        for thread_id in ids:
            config = {"configurable": {"thread_id": thread_id}}
            if next(iter(saver.list(config, limit=1)), None) is not None:
                saver.delete_thread(thread_id)
                removed.append(thread_id)
        return removed
    finally:
        conn.close()


def prune(store: AuditStore, before: datetime, *, checkpoints: Path | None = None) -> RetentionReport:
    report = store.prune(before)
    removed: list[str] = []
    if checkpoints is not None and report.runs_removed:
        removed = prune_checkpoints(checkpoints, report.runs_removed)
        if removed:
            store.record("checkpoint", {"event": "prune_langgraph_checkpoints", "before": report.before, "threads": removed})
    return RetentionReport(report, removed)
