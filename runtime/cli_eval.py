"""`flotilla eval WORKFLOW --dataset FILE --config A [--config B …]`. Wiring only: the engine is
flotilla.graphs.evaluation."""

from __future__ import annotations

import json
import shlex
import sys
import uuid
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape

from flotilla.audit.errors import ConfigError, FlotillaError

__all__ = ["eval_command"]


def eval_command(
    workflow: Annotated[str, typer.Argument(help="Workflow: built-in name, YAML path or registered Python workflow.")],
    dataset: Annotated[Path, typer.Option("--dataset", "-d", help="JSONL of labelled cases: {id, input, expected: {agent: {field: value}}, tags}.")],
    config: Annotated[list[Path], typer.Option("--config", "-c", help="A flotilla.yaml overlay (repeat to compare configs side by side).")],
    scorers: Annotated[Optional[Path], typer.Option("--scorers", help="Scorers per field (default: scorers.yaml beside the dataset).")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Only the first N cases.")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", "-j", min=1, help="Cases run at once (per config).")] = 2,
    out: Annotated[Optional[Path], typer.Option("--out", help="Results dir (resumable); default evals/WORKFLOW-DATASET.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object on stdout.")] = False,
    html: Annotated[Optional[Path], typer.Option("--html", help="Write the HTML report here (default OUT/report.html).")] = None,
    fail_below: Annotated[
        Optional[list[str]], typer.Option("--fail-below", help="Gate for CI: accuracy=0.9 (at least), needs_review_rate<=0.1, p99_ms<=5000, extract.total=0.95.")
    ] = None,
) -> None:
    """Run every labelled case under every config through the real runner and compare them."""
    import asyncio

    import yaml

    from flotilla.graphs.catalog import load_workflow
    from flotilla.graphs.evaluation import (
        ResultsLog, build_report, check_cases, check_config, failed_gates, load_overlay, load_scorers, parse_gates, read_cases,
    )
    from flotilla.graphs.evaluation.cases import check_scorer_fields
    from flotilla.graphs.spec import SpecError
    from flotilla.runtime.cli import EXIT_CANCELLED, EXIT_FAILED, fail
    from flotilla.runtime.settings import Settings, load_settings

    try:
        settings = load_settings()
        spec = load_workflow(workflow, settings.workflows)
        cases = read_cases(dataset)[:limit]
        check_cases(cases, spec, dataset)
        scorer_set = load_scorers(scorers or dataset.parent / "scorers.yaml")
        if scorers is not None and not scorers.is_file():
            raise ConfigError(f"scorers file {scorers} does not exist")
        if scorer_set.workflow and scorer_set.workflow != spec.name:
            raise ConfigError(f"{scorer_set.source}: its scorers are for workflow {scorer_set.workflow!r}, not {spec.name!r}")
        check_scorer_fields(scorer_set, spec)
        base: dict[str, Any] = {}
        if settings.config_file is not None:
            base = yaml.safe_load(settings.config_file.read_text(encoding="utf-8")) or {}
        configs = [load_overlay(path, base, spec, Settings.model_fields) for path in config]
        names = [c.name for c in configs]
        if len(set(names)) != len(names):
            raise ConfigError(f"two configs share a name ({', '.join(names)}); a config is named by its file name")
        config_settings = {}
        for c in configs:
            config_settings[c.name] = load_settings(**c.settings_data)
            check_config(c, set(config_settings[c.name].models) | {"embedded"}, config_settings[c.name].mcp_servers)
        gates = parse_gates(fail_below or [])
    except SpecError as exc:
        raise fail("; ".join(str(p) for p in exc.problems)) from None
    except FlotillaError as exc:
        raise fail(exc.message) from None

    out = out or Path("evals") / f"{spec.name}-{dataset.stem}"
    log = ResultsLog(out / "results.jsonl")
    resume_command = "flotilla " + shlex.join(["eval", *sys.argv[sys.argv.index("eval") + 1:]] if "eval" in sys.argv else ["eval", workflow])
    if out != Path("evals") / f"{spec.name}-{dataset.stem}" and "--out" not in resume_command:
        resume_command += f" --out {shlex.quote(str(out))}"
    err = Console(stderr=True)
    by_config: dict[str, list[dict[str, Any]]] = {}
    try:
        by_config = asyncio.run(_run_all(configs, config_settings, cases, scorer_set, log, concurrency, err))
    except KeyboardInterrupt:
        kept = sum(1 for key in log.finished())
        err.print(f"[yellow]interrupted[/]: {kept} finished case result(s) are kept in {escape(str(log.path))}", highlight=False)
        err.print(f"resume with: {escape(resume_command)}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_CANCELLED) from None
    except FlotillaError as exc:
        raise fail(exc.message) from None

    report = build_report(
        spec.name,
        str(dataset),
        [{"name": c.name, "path": str(c.path), "description": c.description} for c in configs],
        by_config,
        {case.id: case.fields() for case in cases},
    )
    from flotilla.graphs.evaluation.html import write_html
    from flotilla.graphs.evaluation.report import render_table

    (out / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False, default=str), encoding="utf-8")
    html_path = write_html(report, html or out / "report.html")
    if as_json:
        sys.stdout.write(json.dumps(report, ensure_ascii=False, default=str) + "\n")
    else:
        console = Console()
        render_table(report, console)
        console.print(f"report: {escape(str(html_path))} · results: {escape(str(log.path))}", highlight=False, soft_wrap=True)
    misses = failed_gates(report, gates)
    for miss in misses:
        err.print(f"[red]gate failed:[/] {escape(miss)}", highlight=False, soft_wrap=True)
    if misses:
        raise typer.Exit(EXIT_FAILED)


async def _run_all(configs, config_settings, cases, scorer_set, log, concurrency, err: Console) -> dict[str, list[dict[str, Any]]]:
    """Config after config (each its own runtime, so one audit store writer at a time); the cases
    of one config run `concurrency` at a time under one progress bar with an ETA."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from flotilla.graphs.evaluation import run_config
    from flotilla.graphs.evaluation.engine import case_digest
    from flotilla.graphs.verify_spec import tiers_of
    from flotilla.runtime.wiring import build_runtime

    eval_id = uuid.uuid4().hex[:12]
    done = log.finished()
    total = len(cases) * len(configs)
    already = sum(
        1 for c in configs for case in cases
        if (r := done.get((c.name, c.fingerprint, case.id))) and r.get("case_digest") == case_digest(case)
    )
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        console=err, transient=False,
    )
    task = progress.add_task("eval", total=total, completed=already)
    results: dict[str, list[dict[str, Any]]] = {}
    for config in configs:
        runtime = build_runtime(config_settings[config.name])
        try:
            # Models load before the bar starts: their own spinner and the bar cannot share the terminal.
            for agent in config.spec.agents.values():
                if agent.kind == "model":
                    for alias in tiers_of(agent):
                        runtime.registry.resolve(alias)
            progress.update(task, description=f"eval {config.name}")
            with progress:
                async with runtime.runner as runner:
                    results[config.name] = await run_config(
                        runner, config, cases, scorer_set, config_settings[config.name].price_table, log,
                        eval_id=eval_id, concurrency=concurrency, on_done=lambda _record: progress.advance(task),
                    )
        finally:
            runtime.close()
    return results
