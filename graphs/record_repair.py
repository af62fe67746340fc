"""Run records the audit chain missed: written late, never lost.

`RunStore` commits a run's row (runs database), then appends its `run` record to the audit chain
(another database). A process killed between the two leaves a row that says the run started or
finished and a chain that does not; writing the record first would only trade the loss for a
duplicate. So recovery (`recover_orphans`: `flotilla serve` at start-up and every 30 s, and
`flotilla runs recover`) appends the missing `started` / `finished` record afterwards, marked
`repaired: true` with the row's status and times, so the trail shows it was written late.

Cheap: only runs started or ended in a window — a day back on a store's first round in a process,
then since its previous round (less an overlap) — one query on the runs table, one on the chain.
No duplicates: a run whose owner may still be about to append (alive, and its row changed less
than `grace_s` ago) is left for a later round, and the check is repeated inside the audit write
transaction that appends, so two processes repairing the same gap append it once.
"""

from __future__ import annotations

import json
import logging
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, or_, select

from flotilla.audit.runs import UNFINISHED
from flotilla.audit.runs import runs as runs_table
from flotilla.audit.schema import records
from flotilla.audit.store import NewRecord, utc_iso
from flotilla.graphs.recovery import LEASE_S, owner_is_alive

if TYPE_CHECKING:
    from flotilla.audit.runs import RunStore

__all__ = ["Repaired", "repair_run_records", "FIRST_WINDOW"]

log = logging.getLogger(__name__)

FIRST_WINDOW = timedelta(hours=24)
"""How far back a store's first repair round in a process looks (a crash an operator recovers the next day)."""
_OVERLAP = timedelta(seconds=5)
_LIFECYCLE = frozenset({"started", "resumed", "recovered", "waiting_approval", "finished"})
_CHUNK = 500  # run ids per IN (...) list
_last_round: weakref.WeakKeyDictionary[RunStore, datetime] = weakref.WeakKeyDictionary()


@dataclass(frozen=True, slots=True)
class Repaired:
    run_id: str
    event: str
    """`started` or `finished`: the record appended late."""
    status: str


@dataclass(frozen=True, slots=True)
class _Row:
    run_id: str
    workflow: str
    workflow_version: str
    status: str
    initiator: str | None
    input_sha256: str | None
    error: str | None
    started_at: datetime
    ended_at: datetime | None
    owner: str | None
    heartbeat_at: datetime | None


def repair_run_records(runs: RunStore, *, grace_s: float = LEASE_S, since: datetime | None = None, now: datetime | None = None) -> list[Repaired]:
    """Append the `started` / `finished` records missing from the chain for recent runs; returns them."""
    audit = runs.audit
    if audit is None:
        return []
    now = now or datetime.now(UTC)
    if since is None:
        last = _last_round.get(runs)
        since = now - FIRST_WINDOW if last is None else last - timedelta(seconds=grace_s) - _OVERLAP
    anchor = audit.anchor()
    if anchor is not None:  # records before a prune are gone on purpose: not to be "repaired"
        since = max(since, _utc(datetime.fromisoformat(anchor.extra["before"].replace("Z", "+00:00"))))
    settled = {row.run_id: row for row in _recent_rows(runs, since) if _settled(row, now, grace_s)}
    repaired: list[Repaired] = []
    if settled:
        with audit.engine.connect() as conn:  # a first look without the write lock: usually nothing is missing
            suspects = {rid: settled[rid] for rid in _missing(conn, settled.values())}
        if suspects:
            steps = _step_counts(runs, list(suspects))

            def find(conn: Connection) -> list[NewRecord]:
                found = []
                for run_id, events in _missing(conn, suspects.values()).items():
                    for event in events:
                        found.append(_record(suspects[run_id], event, steps.get(run_id, 0)))
                        repaired.append(Repaired(run_id, event, suspects[run_id].status))
                return found

            audit.append_missing(find)
    _last_round[runs] = now
    for item in repaired:
        log.warning("run %s: its `%s` record was missing from the audit chain (process killed in between); appended now, marked repaired",
                    item.run_id, item.event)
    return repaired


def _recent_rows(runs: RunStore, since: datetime) -> list[_Row]:
    c = runs_table.c
    cols = (c.run_id, c.workflow, c.workflow_version, c.status, c.initiator, c.input_sha256, c.error, c.started_at, c.ended_at, c.owner, c.heartbeat_at)
    stmt = select(*cols).where(c.status != "pending", or_(c.started_at >= since, c.ended_at >= since))
    with runs.engine.connect() as conn:
        return [_Row(*row) for row in conn.execute(stmt)]


def _settled(row: _Row, now: datetime, grace_s: float) -> bool:
    """Whether the row's process can no longer append the record itself: the row changed more than
    `grace_s` ago, or its owner is dead. (An ownerless run waits the grace out.)"""
    changed = _utc(row.ended_at if row.status not in UNFINISHED and row.ended_at else row.started_at)
    if (now - changed).total_seconds() >= grace_s:
        return True
    return bool(row.owner) and not owner_is_alive(row.owner, row.heartbeat_at, now=now, lease_s=grace_s)


def _missing(conn: Connection, rows: Iterable[_Row]) -> dict[str, list[str]]:
    """Per run, the events (`started`, `finished`) its row implies but the chain lacks."""
    rows = list(rows)
    events: dict[str, list[dict[str, Any]]] = {row.run_id: [] for row in rows}
    ids = list(events)
    for start in range(0, len(ids), _CHUNK):
        stmt = select(records.c.run_id, records.c.payload).where(records.c.kind == "run", records.c.run_id.in_(ids[start:start + _CHUNK]))
        for run_id, payload in conn.execute(stmt.order_by(records.c.seq)):
            events[run_id].append(json.loads(payload))
    missing: dict[str, list[str]] = {}
    for row in rows:
        seen = events[row.run_id]
        lacks = [] if any(e.get("event") == "started" for e in seen) else ["started"]
        # The last lifecycle fact must be the finish (a run resumed after one finish finishes again);
        # a `started` appended late (after the finish, perhaps) says nothing about order.
        lifecycle = [e.get("event") for e in seen if e.get("event") in _LIFECYCLE and not (e.get("event") == "started" and e.get("repaired"))]
        if row.status not in UNFINISHED and (not lifecycle or lifecycle[-1] != "finished"):
            lacks.append("finished")
        if lacks:
            missing[row.run_id] = lacks
    return missing


def _step_counts(runs: RunStore, run_ids: Sequence[str]) -> dict[str, int]:
    with runs.engine.connect() as conn:
        stmt = select(runs_table.c.run_id, runs_table.c.steps).where(runs_table.c.run_id.in_(list(run_ids)))
        return {run_id: len(json.loads(steps or "[]")) for run_id, steps in conn.execute(stmt)}


def _record(row: _Row, event: str, steps: int) -> NewRecord:
    payload: dict[str, Any] = {"run_id": row.run_id, "event": event, "repaired": True, "row_status": row.status}
    if event == "started":
        payload.update(workflow=row.workflow, workflow_version=row.workflow_version, initiator=row.initiator,
                       input_sha256=row.input_sha256, started_at=utc_iso(_utc(row.started_at)))
        if row.status == "running":  # only then is `running` the latest fact (the run summary folds `status`)
            payload["status"] = "running"
    else:
        payload.update(status=row.status, steps=steps, ended_at=utc_iso(_utc(row.ended_at)) if row.ended_at else None,
                       error=None if row.error is None else json.loads(row.error))
    return NewRecord("run", payload, row.run_id)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
