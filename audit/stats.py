"""Per-specialist figures from the audit store: what `flotilla stats` and the audit page show.

One row per (workflow, agent, model alias, model version), computed with SQL aggregation over
the span records (SQLite's json_extract, PostgreSQL's jsonb operators), so the figures survive
a restart and need no process that watched the runs:

- steps come from `invoke_agent` spans and the `flotilla.step.*` attributes `Agent.run` sets
  (first-try schema adherence, repairs, verification, the tier that ended the step, errors);
  the model alias is the agent's first tier, the version its adapter or else its model name;
- tokens, calls and cost come from `chat` spans, under the alias each call used — so a
  frontier tier's cost shows on the frontier's row, where the money went.

Latency percentiles are nearest-rank (the value at rank ceil(p·n) of the sorted step
durations), computed in SQL with window functions. Rates are None where nothing was counted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import BigInteger, Float, Integer, and_, case, cast, func, select
from sqlalchemy.sql.elements import ColumnElement

from flotilla.audit import semconv as sc
from flotilla.audit.schema import records
from flotilla.audit.store import AuditStore, utc_iso

__all__ = ["SpecialistStats", "TrendPoint", "specialist_stats", "trend", "parse_since", "PERCENTILES"]

PERCENTILES = (50, 95, 99)
Key = tuple[str, str, str, str]


@dataclass(slots=True)
class SpecialistStats:
    workflow: str
    agent: str
    alias: str
    version: str
    requests: int = 0
    first_try_checked: int = 0
    """Steps whose first reply was checked against the schema (not an endpoint error first)."""
    first_try_valid: int = 0
    repairs: int = 0
    verified: int = 0
    verified_passed: int = 0
    escalated: int = 0
    escalated_to: dict[str, int] = field(default_factory=dict)
    """Where escalated steps ended: the alias that answered, or `needs_review`."""
    errors: dict[str, int] = field(default_factory=dict)
    """Failed steps by error type."""
    latency_ms: dict[str, float | None] = field(default_factory=dict)
    """p50 / p95 / p99 step duration."""
    calls: int = 0
    """Model calls made under this alias (chat spans), repairs and escalations included."""
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def key(self) -> Key:
        return (self.workflow, self.agent, self.alias, self.version)

    @property
    def first_try_rate(self) -> float | None:
        return _rate(self.first_try_valid, self.first_try_checked)

    @property
    def repair_rate(self) -> float | None:
        return _rate(self.repairs, self.requests)

    @property
    def verification_pass_rate(self) -> float | None:
        return _rate(self.verified_passed, self.verified)

    @property
    def escalation_rate(self) -> float | None:
        return _rate(self.escalated, self.requests)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(first_try_rate=self.first_try_rate, repair_rate=self.repair_rate,
                   verification_pass_rate=self.verification_pass_rate, escalation_rate=self.escalation_rate)
        return out


@dataclass(frozen=True, slots=True)
class TrendPoint:
    bucket: str
    """The day (`2026-11-30`) or hour (`2026-11-30T14`), UTC, the steps started in."""
    requests: int
    first_try_rate: float | None
    escalation_rate: float | None


def specialist_stats(store: AuditStore, *, workflow: str | None = None, since: datetime | None = None) -> list[SpecialistStats]:
    """Every specialist's figures, sorted by workflow, agent, alias, version.

    Two statements, one pass over the records each: steps grouped by (key, escalation tier,
    error type) with the latency ranks in a window, and model calls grouped by key."""
    steps = _steps(_Json(store.dialect, "invoke_agent"), workflow, since).subquery("steps")
    key_cols = [steps.c.workflow, steps.c.agent, steps.c.alias, steps.c.version]
    ranked = select(
        steps,
        func.row_number().over(partition_by=key_cols, order_by=steps.c.duration_ms).label("rank"),
        func.count().over(partition_by=key_cols).label("n"),
    ).subquery("ranked")
    rk = [ranked.c.workflow, ranked.c.agent, ranked.c.alias, ranked.c.version]
    escalated_to = case((ranked.c.escalated == 1, func.coalesce(ranked.c.tier, "")))
    error = case((ranked.c.status == "ERROR", func.coalesce(ranked.c.error_type, "error")))
    grouped = select(
        *rk, escalated_to, error,
        func.count(),
        func.sum(case((ranked.c.first_try.is_not(None), 1), else_=0)),
        func.sum(case((ranked.c.first_try == 1, 1), else_=0)),
        func.coalesce(func.sum(ranked.c.repairs), 0),
        func.coalesce(func.sum(ranked.c.verified), 0),
        func.coalesce(func.sum(ranked.c.verified_passed), 0),
        func.sum(case((ranked.c.escalated == 1, 1), else_=0)),
        # Nearest rank ceil(p·n), in integer arithmetic (no CEIL in every SQLite build); exactly
        # one group of a key holds each rank, the others give NULL.
        *(func.max(case((ranked.c.rank == (ranked.c.n * p + 99) // 100, ranked.c.duration_ms))) for p in PERCENTILES),
    ).group_by(*rk, escalated_to, error)
    chats = _chats(_Json(store.dialect, "chat"), workflow, since).subquery("chats")
    chat_totals = select(
        chats.c.workflow, chats.c.agent, chats.c.alias, chats.c.version,
        func.count(), func.coalesce(func.sum(chats.c.input_tokens), 0), func.coalesce(func.sum(chats.c.output_tokens), 0),
        func.coalesce(func.sum(chats.c.cost_usd), 0.0),
    ).group_by(chats.c.workflow, chats.c.agent, chats.c.alias, chats.c.version)

    rows: dict[Key, SpecialistStats] = {}

    def row(values: Iterable[Any]) -> SpecialistStats:
        k = tuple(str(v or "") for v in values)
        if k not in rows:
            rows[k] = SpecialistStats(*k, latency_ms={f"p{p}": None for p in PERCENTILES})  # type: ignore[arg-type,misc]
        return rows[k]

    with store.engine.connect() as conn:
        for w, a, al, v, tier, err, n, checked, valid, repairs, verified, passed, escalated, *pcts in conn.execute(grouped):
            s = row((w, a, al, v))
            s.requests += int(n)
            s.first_try_checked += int(checked or 0)
            s.first_try_valid += int(valid or 0)
            s.repairs += int(repairs)
            s.verified += int(verified)
            s.verified_passed += int(passed)
            s.escalated += int(escalated or 0)
            if tier is not None:
                s.escalated_to[str(tier)] = s.escalated_to.get(str(tier), 0) + int(n)
            if err is not None:
                s.errors[str(err)] = s.errors.get(str(err), 0) + int(n)
            for p, value in zip(PERCENTILES, pcts):
                if value is not None:
                    s.latency_ms[f"p{p}"] = float(value)
        for *k, calls, tokens_in, tokens_out, cost in conn.execute(chat_totals):
            s = row(k)
            s.calls, s.input_tokens, s.output_tokens, s.cost_usd = int(calls), int(tokens_in), int(tokens_out), float(cost)
    return [rows[k] for k in sorted(rows)]


def trend(store: AuditStore, workflow: str, *, since: datetime | None = None, by: Literal["day", "hour"] = "day") -> list[TrendPoint]:
    """First-try schema adherence and escalation rate of a workflow's steps, per day or hour."""
    steps = _steps(_Json(store.dialect, "invoke_agent"), workflow, since).subquery("steps")
    seconds = steps.c.start_ns // 1_000_000_000  # whole seconds since the epoch
    if store.dialect == "postgresql":
        moment = func.timezone("UTC", func.to_timestamp(seconds))
        bucket = func.to_char(moment, "YYYY-MM-DD" if by == "day" else 'YYYY-MM-DD"T"HH24').label("bucket")
    else:
        bucket = func.strftime("%Y-%m-%d" if by == "day" else "%Y-%m-%dT%H", seconds, "unixepoch").label("bucket")
    stmt = select(
        bucket,
        func.count(),
        func.sum(case((steps.c.first_try.is_not(None), 1), else_=0)),
        func.sum(case((steps.c.first_try == 1, 1), else_=0)),
        func.sum(case((steps.c.escalated == 1, 1), else_=0)),
    ).group_by(bucket).order_by(bucket)
    with store.engine.connect() as conn:
        return [
            TrendPoint(str(b), int(n), _rate(int(valid or 0), int(checked or 0)), _rate(int(esc or 0), int(n)))
            for b, n, checked, valid, esc in conn.execute(stmt)
        ]


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


_FIELDS = ("start", "end", "status")
_ATTRS = (
    sc.OPERATION, sc.WORKFLOW, sc.AGENT_NAME, sc.MODEL_ALIAS, sc.MODEL_ADAPTER, "gen_ai.request.model",
    sc.STEP_FIRST_TRY_VALID, sc.STEP_REPAIRS, sc.STEP_VERIFIED, sc.STEP_VERIFIED_PASSED, sc.STEP_ESCALATED, sc.STEP_TIER,
    "error.type", "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", sc.COST_USD,
)


class _Json:
    """Span records of one operation, and their attributes as SQL expressions, per dialect.

    Each payload is parsed once. SQLite (before 3.45) re-parses the JSON text in every
    json_extract, so one json_extract with every path needed turns the payload into a short JSON
    array in a materialized CTE, and the columns are read from that; a substring test on the
    canonical JSON (sorted keys, no spaces) picks the candidate records first, the exact attribute
    check confirms them. PostgreSQL casts each payload to jsonb once, in a materialized CTE."""

    def __init__(self, dialect: str, operation: str) -> None:
        self.pg = dialect == "postgresql"
        self.operation = operation
        self._doc: Any = None
        self.recorded_at: Any = None

    def source(self, since: datetime | None) -> Any:
        needle = f'"{sc.OPERATION}":"{self.operation}"'
        # strpos / instr: a plain substring test, cheaper than LIKE (which folds case in SQLite)
        where = [records.c.kind == "span", func.strpos(records.c.payload, needle) > 0 if self.pg else func.instr(records.c.payload, needle) > 0]
        if since:
            where.append(records.c.recorded_at >= utc_iso(since))
        if self.pg:
            from sqlalchemy.dialects.postgresql import JSONB

            doc: Any = cast(records.c.payload, JSONB)
        else:
            paths = [f"$.{name}" for name in _FIELDS] + [f'$.attributes."{name}"' for name in _ATTRS]
            doc = func.json_extract(records.c.payload, *paths)
        cte = select(records.c.recorded_at, doc.label("doc")).where(and_(*where)).cte(f"{self.operation}_docs")
        cte = cte.prefix_with("MATERIALIZED")  # or the planner inlines it and parses once per column again
        self._doc, self.recorded_at = cte.c.doc, cte.c.recorded_at
        return cte

    def attr(self, name: str) -> ColumnElement[Any]:
        if self.pg:
            return self._doc["attributes"][name].astext
        return func.json_extract(self._doc, f"$[{len(_FIELDS) + _ATTRS.index(name)}]")

    def field(self, name: str) -> ColumnElement[Any]:
        if self.pg:
            return self._doc[name].astext
        return func.json_extract(self._doc, f"$[{_FIELDS.index(name)}]")

    def flag(self, name: str) -> ColumnElement[Any]:
        """A boolean attribute as 1 / 0, or NULL when absent (JSON true is 1 in SQLite, 'true' in Postgres)."""
        value = self.attr(name)
        return case((value.is_(None), None), (value.in_(["true"] if self.pg else [1, "true"]), 1), else_=0)

    def number(self, name: str) -> ColumnElement[Any]:
        return cast(self.attr(name), Float)

    def filters(self, workflow: str | None) -> list[ColumnElement[Any]]:
        where = [self.attr(sc.OPERATION) == self.operation]
        if workflow:
            where.append(self.attr(sc.WORKFLOW) == workflow)
        return where


def _key(j: _Json) -> list[ColumnElement[Any]]:
    return [
        func.coalesce(j.attr(sc.WORKFLOW), "").label("workflow"),
        func.coalesce(j.attr(sc.AGENT_NAME), "").label("agent"),
        func.coalesce(j.attr(sc.MODEL_ALIAS), "").label("alias"),
        func.coalesce(j.attr(sc.MODEL_ADAPTER), j.attr("gen_ai.request.model"), "").label("version"),
    ]


def _steps(j: _Json, workflow: str | None, since: datetime | None):
    source = j.source(since)
    # Nanosecond times subtract as integers: as doubles they would lose the sub-microsecond part.
    duration = cast(cast(j.field("end"), BigInteger) - cast(j.field("start"), BigInteger), Float) / 1e6
    return select(
        *_key(j),
        j.recorded_at.label("recorded_at"),
        cast(j.field("start"), BigInteger).label("start_ns"),
        j.flag(sc.STEP_FIRST_TRY_VALID).label("first_try"),
        cast(j.attr(sc.STEP_REPAIRS), Integer).label("repairs"),
        cast(j.attr(sc.STEP_VERIFIED), Integer).label("verified"),
        cast(j.attr(sc.STEP_VERIFIED_PASSED), Integer).label("verified_passed"),
        j.flag(sc.STEP_ESCALATED).label("escalated"),
        j.attr(sc.STEP_TIER).label("tier"),
        j.field("status").label("status"),
        j.attr("error.type").label("error_type"),
        duration.label("duration_ms"),
    ).select_from(source).where(and_(*j.filters(workflow)))


def _chats(j: _Json, workflow: str | None, since: datetime | None):
    source = j.source(since)
    return select(
        *_key(j),
        cast(j.attr("gen_ai.usage.input_tokens"), Integer).label("input_tokens"),
        cast(j.attr("gen_ai.usage.output_tokens"), Integer).label("output_tokens"),
        j.number(sc.COST_USD).label("cost_usd"),
    ).select_from(source).where(and_(*j.filters(workflow)))


_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """`7d`, `12h`, `30m`, `2w` (that long ago) or a UTC date `2026-11-01` / `2026-11-01T08:00`."""
    import re
    from datetime import UTC, timedelta

    from flotilla.audit.errors import ConfigError

    value = text.strip()
    if match := re.fullmatch(r"(\d+)\s*([mhdw])", value):
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[match[2]]: int(match[1])})
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"--since {text!r}: give an age (30m, 12h, 7d, 2w) or a UTC date (2026-11-01 or 2026-11-01T08:00)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
