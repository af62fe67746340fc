"""`flotilla guard …`: run the rails on a text from the shell — for scripts and operators tuning rails."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from flotilla.audit.errors import FlotillaError

if TYPE_CHECKING:  # the rails load when a command runs, not at `flotilla --help`
    from flotilla.guardrails import Guardrails

__all__ = ["guard_app"]

guard_app = typer.Typer(name="guard", help="Guardrails: check a text at a rail point, list configured engines.", no_args_is_help=True)

_POINTS = ["input", "agent-output", "tool-args", "tool-result", "output"]
EXIT_BLOCKED, EXIT_INVALID = 3, 2


def _fail(message: str) -> typer.Exit:
    Console(stderr=True, soft_wrap=True).print(f"[red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(EXIT_INVALID)


def _rails(workflow: str | None) -> tuple[Guardrails, str | None]:
    from flotilla.graphs.catalog import load_workflow
    from flotilla.guardrails import Guardrails
    from flotilla.runtime.settings import load_settings

    settings = load_settings()
    registry = None

    def resolve(alias: str):  # only NeMo asks for a model: build the registry (openai, …) then
        nonlocal registry
        if registry is None:
            from flotilla.runtime.wiring import build_registry

            registry = build_registry(settings)
        return registry.resolve(alias).client

    rails = Guardrails(model_resolver=resolve)
    if workflow:
        spec = load_workflow(workflow, settings.workflows)
        rails.configure_workflow(spec.name, spec.rails)
        return rails, spec.name
    return rails, None


@contextmanager
def _open_lines(source: str) -> Iterator[IO[bytes]]:
    if source == "-":
        yield sys.stdin.buffer
        return
    path = Path(source)
    if not path.is_file():
        raise _fail(f"--jsonl {source}: no such file (give a JSON-lines file, or - for stdin)")
    with path.open("rb") as stream:
        yield stream


@guard_app.command("check")
def check(
    text: Annotated[str | None, typer.Argument(help="The text to check, or - to read stdin (omit with --jsonl).")] = None,
    point: Annotated[str, typer.Option("--point", "-p", help=f"Rail point: {', '.join(_POINTS)}.")] = "input",
    workflow: Annotated[str | None, typer.Option("--workflow", "-w", help="Use this workflow's `rails:` section.")] = None,
    jsonl: Annotated[
        str | None,
        typer.Option("--jsonl", metavar="FILE|-", help="Check every line of this JSON-lines file (- for stdin) in one process; see below."),
    ] = None,
    explain: Annotated[
        bool, typer.Option("--explain", help="Add each classifier's score and its nearest training examples (key `explain`).")
    ] = False,
) -> None:
    """Print a JSON verdict: allowed, the (possibly redacted/quarantined) text, and each engine's verdict.

    With --jsonl, the engines load once and every input line is checked; one JSON result per line on stdout, in order.

    Input line: {"text": "...", "point": "tool-result", "id": "doc-7"} (point and id optional; point defaults to --point), or a plain JSON string. Blank lines are skipped.

    Result line: line, id, point, verdict (allow, redact, quarantine, block), allowed, engine / rule / score of the deciding engine, latency_ms, text (only when an engine changed it), engines (each enabled engine's verdict).

    A line that cannot be read gets {"line": N, "error": {"code": "invalid_line", "message": ...}} and the rest still run. Exit status: 2 if any line was invalid, else 3 if any text was blocked, else 0.
    """
    from flotilla.guardrails import RailPoint

    if point not in _POINTS:
        raise _fail(f"unknown point {point!r}; use one of: {', '.join(_POINTS)}")
    if (text is None) == (jsonl is None):
        raise _fail("give a TEXT (or - for stdin), or --jsonl FILE|- to check many texts; not both")
    if jsonl is not None:
        if explain:
            raise _fail("--explain works on one TEXT, not with --jsonl")
        raise typer.Exit(_check_jsonl(jsonl, RailPoint(point), workflow))
    import asyncio

    if text == "-":
        text = sys.stdin.read()
    try:
        rails, name = _rails(workflow)
        report = asyncio.run(rails.report(RailPoint(point), text, workflow=name))
        output = report.to_dict()
        if explain:
            from flotilla.guardrails.explain import explain as nearest

            output["explain"] = nearest(rails, text, workflow=name)
    except FlotillaError as exc:
        raise _fail(exc.message) from None
    typer.echo(json.dumps(output, ensure_ascii=False, indent=2))
    if not report.allowed:
        raise typer.Exit(EXIT_BLOCKED)


def _check_jsonl(source: str, point, workflow: str | None) -> int:
    import asyncio

    from flotilla.guardrails.batch import check_lines
    from flotilla.runtime.console import loading

    async def run(lines: IO[bytes]) -> int:
        rails, name = _rails(workflow)
        with loading("loading the rail engines"):
            await rails.warm_up(name)
        invalid = blocked = False
        async for result in check_lines(rails, lines, point=point, workflow=name):
            invalid |= "error" in result
            blocked |= result.get("allowed") is False
            sys.stdout.write(json.dumps(result, ensure_ascii=False) + "\n")
            sys.stdout.flush()  # a result per line as it is decided: usable as a pipe
        return EXIT_INVALID if invalid else EXIT_BLOCKED if blocked else 0

    try:
        with _open_lines(source) as lines:
            return asyncio.run(run(lines))
    except FlotillaError as exc:
        raise _fail(exc.message) from None


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
