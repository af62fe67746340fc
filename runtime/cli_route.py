"""`flotilla route TEXT|-`: where a router workflow would send a request, and every score. Wiring only."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from flotilla.audit.errors import FlotillaError

__all__ = ["route"]


def route(
    text: Annotated[str, typer.Argument(help="The request to route, or - to read it from stdin.")],
    router: Annotated[str, typer.Option("--router", "-r", help="Router workflow: built-in name or YAML path.")] = "router",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Show where a request would go (no workflow runs): the decision and each route's score."""
    from flotilla.graphs.catalog import load_workflow
    from flotilla.graphs.router import Router
    from flotilla.runtime.cli import EXIT_NEEDS_REVIEW, EXIT_OK, fail
    from flotilla.runtime.settings import load_settings

    if text == "-":
        text = sys.stdin.read()
    try:
        settings = load_settings()
        spec = load_workflow(router, settings.workflows)
        decision = Router(spec, settings.cache_dir).decide(text)
    except FlotillaError as exc:
        raise fail(exc.message) from None
    code = EXIT_NEEDS_REVIEW if decision.target == "needs_review" else EXIT_OK
    if as_json:
        sys.stdout.write(json.dumps({"router": spec.name, **decision.to_dict(), "latency_ms": round(decision.latency_ms, 3)}) + "\n")
        raise typer.Exit(code)
    assert spec.router is not None
    table = Table(title=f"router {spec.name} (threshold {spec.router.threshold:.2f})", title_justify="left")
    table.add_column("route")
    table.add_column("goes to")
    table.add_column("score", justify="right")
    for label, score in decision.scores.items():
        mark = "bold green" if label == decision.label and not decision.fallback else ""
        table.add_row(label, spec.router.routes[label].to, f"{score:.3f}", style=mark)
    console = Console()
    console.print(table)
    colour = "yellow" if decision.fallback else "green"
    console.print(f"[{colour}]→ {escape(decision.target)}[/]  {escape(decision.reason)}  [dim]({decision.latency_ms:.2f} ms)[/]", highlight=False)
    raise typer.Exit(code)
