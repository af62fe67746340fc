"""`flotilla guard …`: run the rails on a text from the shell — for scripts and operators tuning rails."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Annotated

import typer
from rich.console import Console

from flotilla.audit.errors import FlotillaError

__all__ = ["guard_app"]

guard_app = typer.Typer(name="guard", help="Guardrails: check a text at a rail point, list configured engines.", no_args_is_help=True)

_POINTS = ["input", "agent-output", "tool-args", "tool-result", "output"]
EXIT_BLOCKED, EXIT_INVALID = 3, 2


def _fail(message: str) -> typer.Exit:
    Console(stderr=True).print(f"[red]error:[/] {message}", highlight=False)
    return typer.Exit(EXIT_INVALID)


def _rails(workflow: str | None):
    from flotilla.graphs import load_workflow
    from flotilla.guardrails import Guardrails
    from flotilla.runtime.settings import load_settings
    from flotilla.runtime.wiring import build_registry

    registry = build_registry(load_settings())
    rails = Guardrails(model_resolver=lambda alias: registry.resolve(alias).client)
    if workflow:
        spec = load_workflow(workflow)
        rails.configure_workflow(spec.name, spec.rails)
        return rails, spec.name
    return rails, None


@guard_app.command("check")
def check(
    text: Annotated[str, typer.Argument(help="The text to check, or - to read stdin.")],
    point: Annotated[str, typer.Option("--point", "-p", help=f"Rail point: {', '.join(_POINTS)}.")] = "input",
    workflow: Annotated[str | None, typer.Option("--workflow", "-w", help="Use this workflow's `rails:` section.")] = None,
) -> None:
    """Print a JSON verdict: allowed, the (possibly redacted/quarantined) text, and each engine's verdict."""
    from flotilla.guardrails import RailPoint

    if point not in _POINTS:
        raise _fail(f"unknown point {point!r}; use one of: {', '.join(_POINTS)}")
    if text == "-":
        text = sys.stdin.read()
    try:
        rails, name = _rails(workflow)
        report = asyncio.run(rails.report(RailPoint(point), text, workflow=name))
    except FlotillaError as exc:
        raise _fail(exc.message) from None
    typer.echo(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
    if not report.allowed:
        raise typer.Exit(EXIT_BLOCKED)


@guard_app.command("engines")
def engines(
    workflow: Annotated[str | None, typer.Option("--workflow", "-w", help="Use this workflow's `rails:` section.")] = None,
) -> None:
    """List the configured engines, whether each is enabled, and at which points it runs (JSON)."""
    try:
        rails, name = _rails(workflow)
        listing = rails.pipeline(name).engines()
    except FlotillaError as exc:
        raise _fail(exc.message) from None
    typer.echo(json.dumps(listing, indent=2))
