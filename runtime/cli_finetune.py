"""`flotilla export-finetune` and `flotilla finetune`: distil a specialist from its runs. Wiring only:
the export lives in flotilla.graphs.distill, the training in flotilla.agents.finetune."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from flotilla.audit.errors import FlotillaError

__all__ = ["finetune", "export_finetune", "validation_path"]


def validation_path(data: Path) -> Path:
    """Where the held-back validation split of `data` lives: `x.jsonl` → `x.val.jsonl`."""
    return data.with_name(data.name.removesuffix(".jsonl") + ".val.jsonl")


def export_finetune(
    workflow: Annotated[str, typer.Option("--workflow", "-w", help="Workflow whose agent to export: built-in name or YAML path.")],
    agent: Annotated[str, typer.Option("--agent", "-a", help="The agent (model step) whose answers to export.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Training JSONL to write; the validation split goes beside it as *.val.jsonl.")] = Path("finetune.jsonl"),
    since: Annotated[datetime | None, typer.Option("--since", help="Only runs started at or after this time (ISO 8601, UTC if no zone).")] = None,
    only: Annotated[str, typer.Option("--only", help="all, verified, approved, or escalated (answers a higher tier gave after the first failed).")] = "all",
    dataset: Annotated[Path | None, typer.Option("--dataset", help="Labelled cases (JSONL) to export instead of past runs.")] = None,
    validation: Annotated[float, typer.Option("--validation", help="Share of examples held back for validation.")] = 0.1,
) -> None:
    """Write chat-format fine-tuning data (JSONL) for one agent: from its runs, or a labelled dataset."""
    from flotilla.agents.finetune.data import dedupe, split_examples, write_examples
    from flotilla.graphs.catalog import load_workflow
    from flotilla.graphs.distill import NothingToExport, examples_from_dataset, examples_from_runs
    from flotilla.runtime.cli import fail
    from flotilla.runtime.settings import load_settings

    console = Console(stderr=True)
    try:
        settings = load_settings()
        spec = load_workflow(workflow, settings.workflows)
        if dataset is not None:
            examples = examples_from_dataset(spec, agent, dataset)
            source = f"{len(examples)} cases of {dataset}"
        else:
            from flotilla.audit.runs import RunStore
            from flotilla.audit.setup import open_audit_store
            from flotilla.graphs.distill import prompt_agent

            prompt_agent(spec, agent)  # an unknown agent is an error, not "no runs"
            key = settings.audit_hmac_key.get_secret_value() if settings.audit_hmac_key else None
            audit = open_audit_store(settings.audit_store_url, hmac_key=key)
            when = since.replace(tzinfo=since.tzinfo or UTC) if since else None
            examples, report = examples_from_runs(RunStore(settings.run_store_url), audit, spec.name, agent, since=when, only=only)  # type: ignore[arg-type]
            skipped = ", ".join(f"{n} {why}" for why, n in report.skipped.items())
            source = f"{report.runs} runs of {spec.name}" + (f" (skipped: {skipped})" if skipped else "")
            if not examples:
                which = "" if only == "all" else f" {only}"
                raise NothingToExport(f"no{which} runs of agent {agent!r} in workflow {spec.name!r} to export from {source}")
        unique = dedupe(examples)
        train, held = split_examples(unique, validation)
    except FlotillaError as exc:
        raise fail(exc.message) from None
    write_examples(out, train)
    write_examples(validation_path(out), held)
    console.print(
        f"[green]exported[/] {len(train)} training + {len(held)} validation examples "
        f"({len(examples) - len(unique)} duplicates dropped) from {escape(source)} → {escape(str(out))}",
        highlight=False,
    )


def finetune(
    agent: Annotated[str, typer.Option("--agent", "-a", help="The agent the adapter is for (its output schema checks the answers).")],
    data: Annotated[Path, typer.Option("--data", "-d", help="Training JSONL (flotilla export-finetune); *.val.jsonl beside it is the validation split.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Adapter folder to write (PEFT format).")],
    workflow: Annotated[str, typer.Option("--workflow", "-w", help="Workflow that declares the agent.")] = "document_triage",
    rank: Annotated[int, typer.Option("--rank", help="LoRA rank.")] = 8,
    alpha: Annotated[float, typer.Option("--alpha", help="LoRA alpha (scale = alpha / rank).")] = 16.0,
    epochs: Annotated[float, typer.Option("--epochs", help="Passes over the training data.")] = 2.0,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate (cosine schedule).")] = 1e-3,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Examples per optimizer step.")] = 4,
    max_length: Annotated[int, typer.Option("--max-length", help="Longest example in tokens; longer ones are left out.")] = 1024,
    top_layers: Annotated[int | None, typer.Option("--top-layers", help="Adapt only the top N layers (cheaper on a CPU); default all.")] = None,
    max_steps: Annotated[int, typer.Option("--max-steps", help="Stop after this many steps (-1: all epochs).")] = -1,
    save_steps: Annotated[int, typer.Option("--save-steps", help="Checkpoint every N steps.")] = 20,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint in OUT/checkpoints.")] = False,
    validate: Annotated[int, typer.Option("--validate", help="Validation prompts answered by the adapter for the schema-valid rate (0: skip).")] = 8,
    as_json: Annotated[bool, typer.Option("--json", help="Print the training report as JSON on stdout.")] = False,
) -> None:
    """Train a LoRA adapter for an agent on the CPU (peft + transformers)."""
    from flotilla.agents.finetune.data import read_examples, split_examples
    from flotilla.agents.finetune.train import TrainOptions, train_adapter
    from flotilla.graphs.catalog import load_workflow
    from flotilla.graphs.distill import prompt_agent
    from flotilla.runtime.cli import fail
    from flotilla.runtime.settings import load_settings

    console = Console(stderr=True)
    try:
        settings = load_settings()
        schema = prompt_agent(load_workflow(workflow, settings.workflows), agent).json_schema
        examples = read_examples(data)
        held_file = validation_path(data)
        if held_file.is_file() and held_file.stat().st_size:
            held = read_examples(held_file)
        else:  # no split beside the data: hold a share back here
            examples, held = split_examples(examples, 0.1)
        options = TrainOptions(
            rank=rank, alpha=alpha, epochs=epochs, lr=lr, batch_size=batch_size, max_length=max_length,
            max_steps=max_steps, save_steps=save_steps, top_layers=top_layers, resume=resume, validate_generations=validate,
        )
        columns = (TextColumn("training {task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
                   TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
        with Progress(*columns, console=console, transient=not console.is_terminal) as bar:
            task = bar.add_task(agent, total=None, loss="–")

            def step(done: int, total: int, loss: float | None) -> None:
                bar.update(task, completed=done, total=total, loss="–" if loss is None else f"{loss:.3f}")

            report = train_adapter(examples, held, out, cache_dir=settings.cache_dir, options=options, schema=schema, progress=step)
    except FlotillaError as exc:
        raise fail(exc.message) from None
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict()) + "\n")
        return
    for note in report.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    val = "–" if report.validation_loss is None else f"{report.validation_loss:.4f}"
    valid = "–" if report.schema_valid is None else f"{report.schema_valid:.0%} schema-valid, {report.exact:.0%} exact"
    console.print(
        f"[green]saved[/] {escape(report.adapter)}: {report.steps} steps on {report.examples} examples "
        f"({report.skipped_too_long} too long, left out), train loss {report.train_loss:.4f}, validation loss {val}, {valid}; "
        f"{report.examples_per_s:.2f} examples/s, {report.wall_s:.0f} s, peak RSS {report.peak_rss_mb:.0f} MB",
        highlight=False,
    )
