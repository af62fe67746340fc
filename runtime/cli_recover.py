"""`flotilla runs recover`: resume the runs whose process died (graphs/recovery.py). Wiring only."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

__all__ = ["recover", "orphan_notice"]


def recover(
    lease: Annotated[float, typer.Option("--lease", min=1.0, help="Seconds without a heartbeat after which a run owned by another host is taken over.")] = 60.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Resume runs left `running` by a process that died (kill -9, a crash, a lost machine).

    Each is taken over by one process only, and continues from its last checkpoint."""
    from flotilla.graphs.recovery import recover_orphans
    from flotilla.runtime.cli import EXIT_FAILED, EXIT_OK
    from flotilla.runtime.cli_jobs import load_runtime, run_on_runner

    settings, runtime = load_runtime(not_on_temporal="the temporal backend recovers runs itself (a worker picks up what another dropped); nothing to do here")
    recovered = run_on_runner(runtime, lambda runner: recover_orphans(runner, resolver(settings), lease_s=lease))
    if as_json:
        sys.stdout.write(json.dumps({"recovered": [asdict(r) for r in recovered]}) + "\n")
    else:
        console = Console()
        if not recovered:
            console.print("no orphaned runs: every `running` run has a live owner", highlight=False)
        else:
            table = Table("run", "workflow", "dead owner", "status")
            for r in recovered:
                status = r.status if r.error is None else f"{r.status}: {r.error}"
                table.add_row(r.run_id, r.workflow, r.previous_owner or "(none recorded)", escape(status))
            console.print(table)
    failed = [r for r in recovered if r.status not in ("succeeded", "needs_review", "waiting_approval", "taken")]
    raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)


def orphan_notice(runs) -> str | None:
    """For `flotilla run`: a line saying that runs of dead processes wait to be recovered (one query)."""
    from flotilla.graphs.recovery import find_orphans

    try:
        orphans = find_orphans(runs)
    except Exception:  # noqa: BLE001 — a hint only; never stands in the way of the run asked for
        return None
    if not orphans:
        return None
    return f"{len(orphans)} run(s) of a process that died are still marked running; `flotilla runs recover` resumes them"


def serve_recovery(settings, runner):
    """`flotilla serve`: recover orphans at start-up and every 30 s (not on temporal, which recovers itself)."""
    import contextlib

    from flotilla.graphs.recovery import recovering

    if settings.backend == "temporal":
        return contextlib.nullcontext()
    return recovering(runner, resolver(settings))


def resolver(settings):
    """Workflows by the name a run keeps: built-in, registered, or NAME.yaml beside flotilla.yaml / here."""
    from pathlib import Path

    from flotilla.graphs.recovery import workflow_resolver

    folders = [settings.config_file.parent] if settings.config_file is not None else []
    return workflow_resolver(settings.workflows, [*folders, Path.cwd()])


runs_app = typer.Typer(name="runs", help="Runs: recover those whose process died.", no_args_is_help=True)
runs_app.command("recover")(recover)
