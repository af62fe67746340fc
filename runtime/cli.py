"""The `flotilla` command. Wires settings, models, telemetry and stores; holds no logic."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from flotilla.agents.models.quiet import QUIET_ENV
from flotilla.audit.errors import ConfigError, FlotillaError

if TYPE_CHECKING:
    from flotilla.runtime.settings import Settings

# Commands import what they use inside their bodies: `flotilla --help` must not pay for LangGraph,
# pydantic-settings or any model library (bench/bench_cli.py measures it).

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("NEMO_GUARDRAILS_NO_USAGE_STATS", "1")
for _name, _value in QUIET_ENV.items():  # before any library imports tqdm: flotilla draws its own progress
    os.environ.setdefault(_name, _value)

app = typer.Typer(
    name="flotilla",
    help="Multi-agent orchestration runtime over MCP.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Exit codes: distinct per outcome so scripts can tell them apart.
EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_BLOCKED, EXIT_NEEDS_REVIEW, EXIT_WAITING, EXIT_CANCELLED = 0, 1, 2, 3, 4, 5, 130
_STATUS_EXIT = {
    "succeeded": EXIT_OK,
    "failed": EXIT_FAILED,
    "blocked": EXIT_BLOCKED,
    "needs_review": EXIT_NEEDS_REVIEW,
    "waiting_approval": EXIT_WAITING,
    "cancelled": EXIT_CANCELLED,
}

err_console = Console(stderr=True, soft_wrap=True)  # error lines stay whole in logs and pipes


def fail(message: str, code: int = EXIT_INVALID) -> typer.Exit:
    err_console.print(f"[red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(code)


def _read_input(source: str) -> bytes:
    if source == "-":
        return sys.stdin.buffer.read()
    path = Path(source)
    if not path.is_file():
        raise fail(f"input file {source} does not exist (give a file path, or - for stdin)")
    return path.read_bytes()


def _pinned_tools(settings: Settings) -> dict[str, set[str]]:
    """The tools each MCP server is pinned with (mcp.lock.json): what tool nodes may name."""
    from flotilla.tools import lock_file_for
    from flotilla.tools.pins import PinStore

    return PinStore(lock_file_for(settings.config_file)).pinned_tools()


@app.command()
def validate(workflow: Annotated[str, typer.Argument(help="Workflow YAML file or built-in name.")]) -> None:
    """Check a workflow file without running anything."""
    from flotilla.graphs.build import check_spec
    from flotilla.graphs.catalog import load_workflow
    from flotilla.graphs.spec import SpecError
    from flotilla.runtime.settings import load_settings

    try:
        settings = load_settings()
        spec = load_workflow(workflow, settings.workflows)
        problems = check_spec(spec, set(settings.models) | {"embedded"}, tool_servers=settings.mcp_servers, known_tools=_pinned_tools(settings))
    except SpecError as exc:
        for problem in exc.problems:
            err_console.print(f"[red]error:[/] {escape(str(problem))}", highlight=False)
        raise typer.Exit(EXIT_INVALID) from None
    except FlotillaError as exc:
        raise fail(exc.message) from None
    if problems:
        for problem in problems:
            err_console.print(f"[red]error:[/] {escape(str(problem))}", highlight=False)
        raise typer.Exit(EXIT_INVALID)
    try:
        engines = [] if spec.kind == "router" else _rails_engines(spec)  # a router's targets run their own rails
    except FlotillaError as exc:
        raise fail(f"{spec.source}: rails: {exc.message}") from None
    console = Console()
    shape = f"Python workflow from {spec.factory}" if spec.kind == "python" else f"{len(spec.agents)} agents, {len(spec.edges)} edges"
    if spec.kind == "router":
        shape = f"router over {len(spec.router.routes)} routes ({', '.join(spec.router.routes)}), fallback {spec.router.fallback}"
    console.print(f"[green]ok[/] {spec.name}: {shape}, version {spec.version()}", highlight=False)
    for engine in engines:
        if engine["enabled"]:
            note = f" [yellow]({escape(engine['note'])})[/]" if engine.get("note") else ""
            note += f" — {escape(engine['tuning'])}" if engine.get("tuning") else ""  # the workflow's thresholds / allow-list
            console.print(f"  rail [bold]{engine['engine']}[/] on at {', '.join(engine['points'])}{note}", highlight=False, soft_wrap=True)
        else:
            console.print(f"  rail [bold]{engine['engine']}[/] [yellow]disabled[/]: {escape(engine['disabled_reason'])}", highlight=False, soft_wrap=True)
    for warning in _missing_model_extras(spec, settings):
        console.print(f"  [yellow]warning[/] {escape(warning)}", highlight=False, soft_wrap=True)


def _missing_model_extras(spec, settings) -> list[str]:
    """Agents whose model needs an extra that is not installed: valid, but a run would stop there."""
    from flotilla.agents.models.registry import EXTRA_MODULES
    from flotilla.audit.errors import MissingExtra

    by_extra: dict[str, list[str]] = {}
    for name, agent in spec.agents.items():
        if agent.kind != "model":  # tool and function nodes call no model
            continue
        for alias in [agent.model] if isinstance(agent.model, str) else agent.model:  # each model tier
            endpoint = settings.models.get(alias)
            extra = "embedded" if endpoint is None or not endpoint.configured else endpoint.provider
            if name not in by_extra.get(extra, []):
                by_extra.setdefault(extra, []).append(name)
    warnings = []
    for extra, agents in by_extra.items():
        if extra in EXTRA_MODULES and (error := MissingExtra.check(f"the {extra} model", extra, *EXTRA_MODULES[extra])):
            warnings.append(f"agent(s) {', '.join(agents)}: {error.message}")
    return warnings


def _rails_engines(spec) -> list[dict]:
    from flotilla.guardrails import Guardrails

    rails = Guardrails()
    rails.configure_workflow(spec.name, spec.rails)
    return rails.pipeline(spec.name).engines()


@app.command()
def run(
    workflow: Annotated[Optional[str], typer.Argument(help="Workflow YAML file or built-in name.")] = None,
    input: Annotated[Optional[str], typer.Option("--input", "-i", help="Input file, or - for stdin.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
    resume: Annotated[Optional[str], typer.Option("--resume", help="Continue a failed or interrupted run.")] = None,
    confidential: Annotated[bool, typer.Option("--confidential", help="No model call of this run may leave local models.")] = False,
    backend: Annotated[Optional[str], typer.Option("--backend", help="`temporal`: submit to `flotilla worker`s on the Temporal task queue (default: the `backend` setting).")] = None,
) -> None:
    """Run a workflow on an input (or resume a run)."""
    import asyncio

    from flotilla.graphs.catalog import load_workflow
    from flotilla.graphs.spec import SpecError
    from flotilla.runtime.cli_recover import orphan_notice
    from flotilla.runtime.console import RunPrinter, print_result
    from flotilla.runtime.settings import load_settings
    from flotilla.runtime.wiring import build_runtime  # imports LangGraph and the model stack

    if resume is None and (workflow is None or input is None):
        raise fail("give a WORKFLOW and --input FILE|- (or --resume RUN_ID)")
    try:
        settings = load_settings()
        if backend not in (None, "local", "postgres", "temporal"):
            raise ConfigError(f"--backend is local, postgres or temporal, not {backend!r}")
        if (backend or settings.backend) == "temporal" and resume is None:  # workers run it: no runtime here
            raise typer.Exit(__import__("flotilla.runtime.cli_worker", fromlist=["x"]).run_on_temporal(settings, workflow, _read_input(input), as_json=as_json, confidential=confidential, initiator=f"cli:{_user()}"))
        runtime = build_runtime(settings)
        if (notice := orphan_notice(runtime.runs)) is not None:  # one query: runs of a dead process wait
            err_console.print(f"[yellow]note:[/] {escape(notice)}", highlight=False)
        if resume is not None:
            record = runtime.runs.get_run(resume)
            if record is None:
                raise ConfigError(f"no run {resume!r} in {settings.data_dir}")
            spec = load_workflow(workflow or record.workflow, settings.workflows)
        else:
            spec = load_workflow(workflow, settings.workflows)
            data = _read_input(input)
    except SpecError as exc:
        raise fail(str(exc)) from None
    except FlotillaError as exc:
        raise fail(exc.message) from None

    console = Console(stderr=as_json)
    printer = None if as_json else RunPrinter(console)

    async def go():
        async with runtime.runner as runner:
            if resume is not None:
                return await runner.resume(spec, resume, on_event=printer)
            return await runner.run(spec, data, initiator=f"cli:{_user()}", on_event=printer, confidential=confidential)

    try:
        result = asyncio.run(go())
    except KeyboardInterrupt:  # the runner has recorded the run as cancelled
        raise fail("cancelled; the run is kept (`flotilla run --resume RUN_ID` continues it)", EXIT_CANCELLED) from None
    except FlotillaError as exc:  # e.g. a run that cannot be resumed
        raise fail(exc.message) from None
    finally:
        runtime.close()
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict(), ensure_ascii=False) + "\n")
    else:
        print_result(console, result, str(runtime.trace_file))
    code = _STATUS_EXIT[result.status]
    if result.error and result.error.get("code") in ("invalid_input", "missing_extra"):
        code = EXIT_INVALID
    raise typer.Exit(code)


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 — no passwd entry in some containers
        return "unknown"


# Sub-apps (one line each, registered by their owners):
app.add_typer(__import__("flotilla.runtime.cli_audit", fromlist=["audit_app"]).audit_app, name="audit")
app.add_typer(__import__("flotilla.runtime.cli_tools", fromlist=["tools_app"]).tools_app)
app.add_typer(__import__("flotilla.runtime.cli_mcp", fromlist=["mcp_app"]).mcp_app)
app.add_typer(__import__("flotilla.runtime.cli_guard", fromlist=["guard_app"]).guard_app)
app.command("serve")(__import__("flotilla.runtime.serve", fromlist=["serve"]).serve)
app.command("route")(__import__("flotilla.runtime.cli_route", fromlist=["route"]).route)
app.command("serve-model")(__import__("flotilla.runtime.cli_model", fromlist=["serve_model"]).serve_model)
app.command("eval")(__import__("flotilla.runtime.cli_eval", fromlist=["eval_command"]).eval_command)
app.command("stats")(__import__("flotilla.runtime.cli_stats", fromlist=["stats"]).stats)
app.command("export-finetune")(__import__("flotilla.runtime.cli_finetune", fromlist=["export_finetune"]).export_finetune)
app.command("finetune")(__import__("flotilla.runtime.cli_finetune", fromlist=["finetune"]).finetune)
app.command("worker")(__import__("flotilla.runtime.cli_worker", fromlist=["worker"]).worker)
app.add_typer(__import__("flotilla.runtime.cli_recover", fromlist=["runs_app"]).runs_app, name="runs")
__import__("flotilla.runtime.cli_runs")  # adds list / show / approve / reject / expire to the `runs` group


def main() -> None:
    app()
