"""Finding runs: the filters of `flotilla audit runs` and the web run list."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, select

from flotilla.audit.schema import run_summaries
from flotilla.audit.store import AuditStore, _summary_from_row, utc_iso
from flotilla.audit.summaries import RunSummary

__all__ = ["RunFilter", "list_runs", "VERDICTS"]

VERDICTS = ("allow", "redact", "block")


@dataclass(frozen=True, slots=True)
class RunFilter:
    workflow: str | None = None
    status: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    verdict: str | None = None
    """The strongest rail verdict in the run: allow, redact or block."""
    escalated: bool | None = None
    model: str | None = None
    initiator: str | None = None
    search: str | None = None
    """Substring of run id, workflow, initiator, model, tool or error."""
    limit: int = 200
    offset: int = 0


def list_runs(store: AuditStore, flt: RunFilter) -> list[RunSummary]:
    c = run_summaries.c
    stmt = select(run_summaries)
    if flt.workflow:
        stmt = stmt.where(c.workflow == flt.workflow)
    if flt.status:
        stmt = stmt.where(c.status == flt.status)
    if flt.since:
        stmt = stmt.where(c.started_at >= utc_iso(flt.since))
    if flt.until:
        stmt = stmt.where(c.started_at < utc_iso(flt.until))
    if flt.verdict:
        stmt = stmt.where(c.verdict == flt.verdict)
    if flt.escalated is not None:
        stmt = stmt.where(c.escalated.is_(flt.escalated))
    if flt.model:
        stmt = stmt.where(c.models.contains(f'"{flt.model}"', autoescape=True))
    if flt.initiator:
        stmt = stmt.where(c.initiator == flt.initiator)
    if flt.search:
        term = flt.search.strip()
        stmt = stmt.where(
            or_(*(col.icontains(term, autoescape=True) for col in (c.run_id, c.workflow, c.initiator, c.models, c.tools, c.error)))
        )
    stmt = stmt.order_by(c.started_at.desc(), c.run_id).limit(flt.limit).offset(flt.offset)
    with store.engine.connect() as conn:
        return [_summary_from_row(r) for r in conn.execute(stmt).mappings()]


def distinct_values(store: AuditStore) -> dict[str, list[str]]:
    """Workflows, statuses and initiators present, for filter drop-downs."""
    c = run_summaries.c
    out: dict[str, list[str]] = {}
    with store.engine.connect() as conn:
        for name, col in (("workflow", c.workflow), ("status", c.status), ("initiator", c.initiator)):
            out[name] = sorted(v for (v,) in conn.execute(select(col).distinct()) if v)
    return out
