"""`flotilla audit …`: the compliance officer's commands. Wiring and printing only."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from flotilla.audit.errors import FlotillaError

if TYPE_CHECKING:  # the commands import the audit store (SQLAlchemy) when they run, not at --help
    from flotilla.audit.store import AuditStore
    from flotilla.audit.tree import SpanNode

__all__ = ["audit_app"]

audit_app = typer.Typer(
    help="The audit trail: runs, span trees, chain verification, exports, retention.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

out = Console()
err = Console(stderr=True, soft_wrap=True)
DATE_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"]
VERDICT_STYLE = {"allow": "green", "redact": "yellow", "block": "bold red"}
STATUS_STYLE = {
    "succeeded": "green", "needs_review": "yellow", "waiting_approval": "cyan", "failed": "red", "blocked": "bold red",
    "cancelled": "bright_black", "running": "cyan", "interrupted": "yellow",
}


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(code)


def _open() -> tuple[AuditStore, Path]:
    from flotilla.audit.setup import open_audit_store
    from flotilla.runtime.settings import load_settings

    try:
        settings = load_settings()
        key = settings.audit_hmac_key.get_secret_value() if settings.audit_hmac_key else None
        return open_audit_store(settings.audit_store_url, hmac_key=key), settings.data_dir
    except FlotillaError as exc:
        raise _fail(exc.message) from None


def _ms(value: float | None) -> str:
    return "–" if value is None else (f"{value / 1000:.2f}s" if value >= 1000 else f"{value:.0f}ms")


@audit_app.command("runs")
def runs_cmd(
    workflow: Annotated[Optional[str], typer.Option(help="Only this workflow.")] = None,
    status: Annotated[Optional[str], typer.Option(help="succeeded, needs_review, waiting_approval, blocked, failed, cancelled, running, interrupted.")] = None,
    since: Annotated[Optional[datetime], typer.Option(formats=DATE_FORMATS, help="Started at or after (UTC).")] = None,
    until: Annotated[Optional[datetime], typer.Option(formats=DATE_FORMATS, help="Started before (UTC).")] = None,
    verdict: Annotated[Optional[str], typer.Option(help="Strongest rail verdict: allow, redact, block.")] = None,
    escalated: Annotated[Optional[bool], typer.Option("--escalated/--not-escalated", help="Went to a frontier model or not.")] = None,
    model: Annotated[Optional[str], typer.Option(help="Used this model.")] = None,
    initiator: Annotated[Optional[str], typer.Option(help="Started by, e.g. cli:alice, mcp:claude-desktop.")] = None,
    search: Annotated[Optional[str], typer.Option("--search", "-s", help="Substring of id, workflow, initiator, model, tool, error.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array on stdout.")] = False,
) -> None:
    """List runs, newest first."""
    from flotilla.audit.query import VERDICTS, RunFilter, list_runs

    if verdict and verdict not in VERDICTS:
        raise _fail(f"--verdict must be one of {', '.join(VERDICTS)}")
    store, _ = _open()
    flt = RunFilter(workflow, status, since, until, verdict, escalated, model, initiator, search, limit)
    rows = list_runs(store, flt)
    if as_json:
        sys.stdout.write(json.dumps(rows, ensure_ascii=False) + "\n")
        return
    table = Table(title=f"{len(rows)} run(s)", title_justify="left", header_style="bold")
    for col in ("started (UTC)", "run", "workflow", "status", "initiator", "models", "verdict", "tokens", "cost", "duration"):
        table.add_column(col, justify="right" if col in ("tokens", "cost", "duration") else "left", no_wrap=col in ("run", "status", "verdict"))
    for r in rows:
        models = ", ".join(r["models"]) + (" [yellow]↑esc[/]" if r["escalated"] else "")
        table.add_row(
            (r["started_at"] or "")[:19].replace("T", " "),
            r["run_id"],
            r["workflow"] or "–",
            f"[{STATUS_STYLE.get(r['status'] or '', 'white')}]{r['status'] or '?'}[/]",
            r["initiator"] or "–",
            models or "–",
            f"[{VERDICT_STYLE.get(r['verdict'] or '', 'dim')}]{r['verdict'] or '–'}[/]",
            str(r["input_tokens"] + r["output_tokens"]),
            f"${r['cost_usd']:.4f}",
            _ms(r["duration_ms"]),
        )
    out.print(table)


def _label(node: SpanNode, start_ns: int) -> str:
    offset = ((node.span.get("start") or start_ns) - start_ns) / 1e6
    parts = [f"[bold]{node.name}[/]", f"[dim]+{_ms(offset)}[/]", _ms(node.duration_ms)]
    if node.operation == "chat":
        tin, tout = node.tokens
        parts.append(f"[cyan]{node.model}[/] {tin}→{tout} tok")
    if (cost := node.attrs.get("flotilla.cost_usd")):
        parts.append(f"${float(cost):.4f}")
    if node.attrs.get("flotilla.escalated"):
        parts.append("[yellow]escalated[/]")
    if node.failed:
        parts.append(f"[red]error: {node.span.get('status_message', '')}[/]")
    for rail in node.rails:
        v = rail["verdict"]
        parts.append(f"[{VERDICT_STYLE.get(v, 'white')}]{rail['engine']}:{rail['rule']}={v}[/]")
    for check in node.evaluations:
        parts.append(f"[{'green' if check['label'] == 'pass' else 'yellow'}]{check['name']}={check['label']}[/]")
    return "  ".join(parts)


@audit_app.command("show")
def show_cmd(
    run_id: Annotated[str, typer.Argument(help="Run id.")],
    as_json: Annotated[bool, typer.Option("--json", help="The run's records as JSON.")] = False,
) -> None:
    """A run's span tree with timings, rail verdicts, tokens and cost."""
    from flotilla.audit.export import export_json
    from flotilla.audit.tree import build_view

    store, _ = _open()
    records = store.run_records(run_id)
    summary = store.run_summary(run_id)
    if not records and summary is None:
        raise _fail(f"no run {run_id!r} in the audit store; `flotilla audit runs` lists them", 1)
    if as_json:
        sys.stdout.write(export_json(store, run_id) + "\n")
        return
    view = build_view(run_id, records)
    s = summary or {}
    out.print(
        f"[bold]{s.get('workflow') or 'run'}[/] {run_id}  status [{STATUS_STYLE.get(s.get('status') or '', 'white')}]{s.get('status')}[/]"
        f"  initiator {s.get('initiator') or '–'}  tokens {s.get('input_tokens', 0)}→{s.get('output_tokens', 0)}"
        f"  cost ${s.get('cost_usd', 0.0):.4f}  remote model calls {s.get('remote_calls', 0)}  verdict [{VERDICT_STYLE.get(s.get('verdict') or '', 'dim')}]{s.get('verdict') or '–'}[/]",
        highlight=False,
    )

    def add(tree: Tree, node: SpanNode) -> None:
        branch = tree.add(_label(node, view.start_ns), highlight=False)
        for child in node.children:
            add(branch, child)

    root = Tree(f"[dim]{len(view.nodes)} spans, {_ms(view.duration_ms)}[/]")
    for node in view.roots:
        add(root, node)
    out.print(root)
    others = view.other_records
    for rec in others:
        out.print(f"[dim]#{rec.seq} {rec.kind} {rec.recorded_at}[/] {json.dumps(rec.payload, ensure_ascii=False)}", highlight=False)


@audit_app.command("verify")
def verify_cmd(
    head: Annotated[Optional[Path], typer.Option("--head", help="A head exported earlier with `flotilla audit head`; the chain must still contain it.")] = None,
    export: Annotated[Optional[Path], typer.Option("--export", help="Check an exported run file (JSON) on its own instead of the store.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Check the whole hash chain; exits 1 and names the first broken record if anything was changed."""
    from flotilla.audit.chain import SignedMark

    if export is not None:
        _verify_export(export)
    store, _ = _open()
    pinned = None
    if head is not None:
        try:
            pinned = SignedMark.from_dict(json.loads(head.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError) as exc:
            raise _fail(f"cannot read the exported head {head}: {exc}") from None
    report = store.verify(pinned=pinned)
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict()) + "\n")
    elif report.ok:
        signed = "signed head verified" if report.signed else "head NOT signed"
        out.print(f"[green]ok[/] chain intact: {report.checked} records ({report.first_seq}..{report.last_seq}), {signed}", highlight=False)
    else:
        err.print(f"[red]BROKEN[/] at record {report.broken_seq}: {report.reason}", highlight=False)
    for warning in report.warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)
    raise typer.Exit(0 if report.ok else 1)


def _verify_export(path: Path) -> None:
    from flotilla.audit.export import check_export
    from flotilla.runtime.settings import load_settings

    try:
        bundle = json.loads(path.read_text(encoding="utf-8"))
        settings = load_settings()
    except (OSError, ValueError) as exc:
        raise _fail(f"cannot read {path}: {exc}") from None
    except FlotillaError as exc:
        raise _fail(exc.message) from None
    key = settings.audit_hmac_key.get_secret_value().encode() if settings.audit_hmac_key else None
    problems = check_export(bundle, key)
    for problem in problems:
        err.print(f"[red]BROKEN[/] {problem}", highlight=False)
    if not problems:
        signed = "signed head verified" if key else "head signature not checked (no key)"
        out.print(f"[green]ok[/] {len(bundle.get('records', []))} records of run {(bundle.get('run') or {}).get('run_id')} intact, {signed}", highlight=False)
    raise typer.Exit(1 if problems else 0)


@audit_app.command("head")
def head_cmd(
    out_file: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write here instead of stdout.")] = None,
) -> None:
    """Export the signed chain head; keep it elsewhere and pass it to `verify --head` to detect truncation."""
    store, _ = _open()
    mark = store.head()
    if mark is None:
        raise _fail("the audit store is empty", 1)
    text = json.dumps(mark.to_dict(), indent=2) + "\n"
    if out_file is None:
        sys.stdout.write(text)
    else:
        out_file.write_text(text, encoding="utf-8")
        err.print(f"wrote head (record {mark.seq}) to {out_file}")


@audit_app.command("export")
def export_cmd(
    run_id: Annotated[str, typer.Argument(help="Run id.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="json or html.")] = "html",
    out_file: Annotated[Optional[Path], typer.Option("--out", "-o", help="File to write, - for stdout (default flotilla-audit-RUN.FORMAT).")] = None,
) -> None:
    """Export one run as a single self-contained file."""
    from flotilla.audit.export import RunNotFound, export_html, export_json

    if fmt not in ("json", "html"):
        raise _fail("--format must be json or html")
    store, _ = _open()
    try:
        body = export_json(store, run_id) if fmt == "json" else export_html(store, run_id)
    except RunNotFound as exc:
        raise _fail(exc.message, 1) from None
    if out_file is not None and str(out_file) == "-":
        sys.stdout.write(body)
        return
    target = out_file or Path(f"flotilla-audit-{run_id}.{fmt}")
    target.write_text(body, encoding="utf-8")
    err.print(f"wrote {target}")


@audit_app.command("prune")
def prune_cmd(
    before: Annotated[datetime, typer.Option(formats=DATE_FORMATS, help="Remove everything older than this (UTC).")],
    checkpoints: Annotated[bool, typer.Option("--checkpoints/--no-checkpoints", help="Also delete LangGraph checkpoints of the finished runs pruned.")] = True,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
) -> None:
    """Remove everything older than a date from every store (audit records, runs, checkpoints, trace file, spool),
    leaving a signed checkpoint so the rest still verifies. Unfinished runs are kept."""
    from flotilla.audit.retention import prune as prune_all
    from flotilla.audit.retention import sqlite_checkpointer
    from flotilla.audit.runs import RunStore
    from flotilla.runtime.settings import load_settings

    store, data_dir = _open()
    question = f"Permanently remove audit records, runs, checkpoints and trace lines older than {before:%Y-%m-%d %H:%M} UTC?"
    if not yes and not typer.confirm(question):
        raise typer.Exit(1)
    saver_file = data_dir / "checkpoints.sqlite"
    try:
        runs = RunStore(load_settings().run_store_url)
        report = prune_all(
            store,
            before,
            runs=runs,
            checkpoints=sqlite_checkpointer(saver_file) if checkpoints and saver_file.is_file() else None,
            traces=data_dir / "traces.jsonl",
            spool=data_dir / "audit-spool.jsonl",
        )
        runs.engine.dispose()
    except FlotillaError as exc:
        raise _fail(exc.message) from None
    a = report.audit
    if not report.removed_anything:
        out.print("nothing to prune")
    else:
        lines = [
            f"audit store: pruned {a.pruned} records (through #{a.through_seq}), {len(a.runs_removed)} finished runs; signed checkpoint left"
            if a.pruned else "audit store: nothing older",
            f"run store: removed {len(report.runs_removed)} finished runs (input, steps, output)",
            f"LangGraph checkpoints removed for {len(report.checkpoint_threads)} runs",
            f"trace file: removed {report.traces.lines} span lines ({report.traces.files} rotated files deleted)",
            f"audit spool: removed {report.spool_records} records",
        ]
        for line in lines:
            out.print(line, highlight=False, soft_wrap=True)
    if report.unfinished_kept:
        shown = ", ".join(report.unfinished_kept[:10]) + (" …" if len(report.unfinished_kept) > 10 else "")
        out.print(
            f"[yellow]kept[/] {len(report.unfinished_kept)} unfinished runs (running or waiting) started before the cut-off: {shown}",
            highlight=False,
            soft_wrap=True,
        )
