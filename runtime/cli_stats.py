"""`flotilla stats`: per-specialist figures from the audit store. Wiring and printing only;
the figures are computed in audit/stats.py."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from flotilla.audit.errors import FlotillaError

if TYPE_CHECKING:
    from flotilla.audit.stats import SpecialistStats

__all__ = ["stats"]

out = Console()
err = Console(stderr=True, soft_wrap=True)


def stats(
    workflow: Annotated[Optional[str], typer.Option(help="Only this workflow.")] = None,
    since: Annotated[str, typer.Option(help="Steps recorded since: an age (30m, 12h, 7d, 2w) or a UTC date; 'all' for everything.")] = "7d",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """Per specialist (workflow, agent, model alias, version): requests, first-try schema adherence,
    repairs, verification, escalations, latency p50/p95/p99, tokens, cost and errors."""
    from flotilla.audit.setup import open_audit_store
    from flotilla.audit.stats import parse_since, specialist_stats
    from flotilla.runtime.settings import load_settings

    try:
        cutoff = None if since.strip().lower() == "all" else parse_since(since)
        settings = load_settings()
        key = settings.audit_hmac_key.get_secret_value() if settings.audit_hmac_key else None
        store = open_audit_store(settings.audit_store_url, hmac_key=key)
        try:
            rows = specialist_stats(store, workflow=workflow, since=cutoff)
        finally:
            store.close()
    except FlotillaError as exc:
        err.print(f"[red]error:[/] {escape(exc.message)}", highlight=False)
        raise typer.Exit(2) from None
    if as_json:
        body = {"workflow": workflow, "since": cutoff.isoformat() if cutoff else None, "specialists": [r.to_dict() for r in rows]}
        typer.echo(json.dumps(body, indent=2))
        return
    if not rows:
        err.print(f"no agent steps recorded{' for ' + escape(workflow) if workflow else ''} since {escape(since)}", highlight=False)
        return
    out.print(_table(rows, since))


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def _ms(value: float | None) -> str:
    return "–" if value is None else (f"{value / 1000:.2f}s" if value >= 1000 else f"{value:.0f}ms")


def _table(rows: list[SpecialistStats], since: str) -> Table:
    table = Table(title=f"Specialists, since {since}", title_justify="left")
    for name, justify in (("workflow", "left"), ("agent", "left"), ("alias", "left"), ("version", "left"), ("steps", "right"),
                          ("1st-try schema", "right"), ("repairs", "right"), ("verified", "right"), ("escalated", "right"),
                          ("p50 / p95 / p99", "right"), ("calls", "right"), ("tokens in / out", "right"), ("cost", "right"),
                          ("errors", "left")):
        table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for r in rows:
        to = ", ".join(f"{tier} {n}" for tier, n in sorted(r.escalated_to.items()))
        lat = r.latency_ms
        table.add_row(
            r.workflow, r.agent, r.alias, r.version, str(r.requests), _pct(r.first_try_rate), _pct(r.repair_rate),
            _pct(r.verification_pass_rate), _pct(r.escalation_rate) + (f" ({to})" if to else ""),
            " / ".join(_ms(lat.get(p)) for p in ("p50", "p95", "p99")) if r.requests else "–",
            str(r.calls), f"{r.input_tokens:,} / {r.output_tokens:,}", f"${r.cost_usd:.4f}",
            ", ".join(f"{k} {n}" for k, n in sorted(r.errors.items())) or "–",
        )
    return table
