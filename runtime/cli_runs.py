"""`flotilla runs list|show|approve|reject|expire`: runs, and the people deciding those that wait.

Wiring only: graphs/approval.py holds the logic. The commands join the `runs` group that
runtime/cli_recover.py defines (`flotilla runs recover`). Exit codes: 2 for an unknown run, a
run not waiting, an approver not allowed or a bad `--edit`, nothing changed; `approve` exits
as `flotilla run` does for the run's outcome (0 succeeded, 5 waiting again at a later approval,
…); `reject` exits 0 once the run has ended `blocked` by it.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from flotilla.audit.errors import FlotillaError
from flotilla.runtime.cli_jobs import load_runtime, run_on_runner
from flotilla.runtime.cli_recover import runs_app

if TYPE_CHECKING:
    from flotilla.audit.runs import RunRecord

__all__ = ["list_runs", "show", "approve", "reject", "expire", "parse_edits"]

runs_app.info.help = "Runs: list them, show one, approve or reject those waiting for a person, recover those whose process died."

AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


def parse_edits(pairs: list[str]) -> dict[str, Any]:
    """`field=value` pairs; a value that reads as JSON (a number, null, a list, "quoted") is that value."""
    from flotilla.audit.errors import InvalidInput

    edits: dict[str, Any] = {}
    for pair in pairs:
        field, sep, value = pair.partition("=")
        if not sep or not field.strip():
            raise InvalidInput(f"--edit {pair!r}: write FIELD=VALUE (e.g. --edit decision=hold, --edit total=1200.5)")
        try:
            edits[field.strip()] = json.loads(value)
        except json.JSONDecodeError:
            edits[field.strip()] = value
    return edits


def _store():
    """The run store alone: listing and showing runs loads no model, rail or MCP server."""
    from flotilla.audit.runs import RunStore
    from flotilla.runtime.cli import fail
    from flotilla.runtime.settings import load_settings

    try:
        return RunStore(load_settings().run_store_url)
    except FlotillaError as exc:
        raise fail(exc.message) from None


def _overdue(record: RunRecord) -> bool:
    from datetime import UTC, datetime

    deadline = (record.approval or {}).get("deadline")
    return record.status == "waiting_approval" and bool(deadline) and datetime.now(UTC) >= datetime.fromisoformat(deadline)


def _expire(records: list[RunRecord]) -> list[tuple[str, str]]:
    """Apply the timeout policy to the overdue approvals among `records` (only then is a runtime built)."""
    from flotilla.graphs.approval import expire_if_due

    overdue = [r for r in records if _overdue(r)]
    if not overdue:
        return []
    _, runtime = load_runtime()

    async def expire_each(runner) -> list[tuple[str, str]]:
        return [(r.run_id, (await expire_if_due(runner, r)).status) for r in overdue]

    return run_on_runner(runtime, expire_each)


def _view(record: RunRecord) -> dict[str, Any]:
    return {
        "run_id": record.run_id,
        "workflow": record.workflow,
        "status": record.status,
        "initiator": record.initiator,
        "started_at": record.started_at.isoformat() if record.started_at else None,
        "ended_at": record.ended_at.isoformat() if record.ended_at else None,
        "output": record.output,
        "error": record.error,
        "steps": record.steps,
        "approval": record.approval,
    }


def list_runs(
    waiting: Annotated[bool, typer.Option("--waiting", help="Only runs waiting for approval.")] = False,
    status: Annotated[Optional[str], typer.Option("--status", help="Only runs with this status.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many, latest first.")] = 20,
    as_json: AsJson = False,
) -> None:
    """List runs, latest first (with --waiting: those waiting for a person, their step and deadline)."""
    from flotilla.runtime.cli import fail
    from flotilla.runtime.console import STATUS_COLOUR

    if waiting and status not in (None, "waiting_approval"):
        raise fail("--waiting lists runs with status waiting_approval; drop --status or --waiting")
    status = "waiting_approval" if waiting else status
    store = _store()
    try:
        records = store.recent(limit=limit, status=status)
        if _expire(records):  # a deadline passed: the policy has changed some of them
            records = store.recent(limit=limit, status=status)
    except FlotillaError as exc:
        raise fail(exc.message) from None
    finally:
        store.engine.dispose()
    if as_json:
        sys.stdout.write(json.dumps({"runs": [_view(r) for r in records]}, ensure_ascii=False, default=str) + "\n")
        return
    console = Console()
    if not records:
        console.print("no runs waiting for approval" if waiting else "no runs", highlight=False)
        return
    table = Table("run", "workflow", "status", "started", "waiting at", "deadline")
    for r in records:
        approval = r.approval if r.status == "waiting_approval" else None
        colour = STATUS_COLOUR.get(r.status, "white")
        table.add_row(
            r.run_id, r.workflow, f"[{colour}]{r.status}[/]", f"{r.started_at:%Y-%m-%d %H:%M}",
            escape(str(approval["step"])) if approval else "", escape(str(approval.get("deadline") or "none")) if approval else "",
        )
    console.print(table)


def show(run_id: Annotated[str, typer.Argument(help="The run id.")], as_json: AsJson = False) -> None:
    """Show a run: its status, steps, and what an approval waits for (or who decided it)."""
    from flotilla.runtime.cli import fail

    store = _store()
    try:
        record = store.get_run(run_id)
        if record is None:
            raise fail(f"no run {run_id!r}; `flotilla runs list` lists runs")
        if _expire([record]):
            record = store.get_run(run_id)
    except FlotillaError as exc:
        raise fail(exc.message) from None
    finally:
        store.engine.dispose()
    if as_json:
        sys.stdout.write(json.dumps(_view(record), ensure_ascii=False, default=str) + "\n")
        return
    print_run(Console(), record)


def print_run(console: Console, record: RunRecord) -> None:
    from flotilla.runtime.console import STATUS_COLOUR

    colour = STATUS_COLOUR.get(record.status, "white")
    console.print(f"run [bold]{record.run_id}[/]  workflow [cyan]{escape(record.workflow)}[/]  [{colour}]{record.status}[/]", highlight=False)
    for step in record.steps:
        mark = "[green]✓[/]" if step.get("ok") else "[red]✗[/]"
        notes = "; ".join(step.get("notes") or [])
        console.print(f"  {mark} {escape(str(step.get('agent')))}  [dim]{escape(notes)}[/]", highlight=False)
    if record.error:
        console.print(f"[{colour}]{escape(record.error.get('type', ''))}[/]: {escape(record.error.get('message', ''))}", highlight=False)
    approval = record.approval
    if not approval:
        return
    decided = approval.get("decision")
    if decided:
        from flotilla.graphs.approval import PAST

        edits = f", changed {', '.join(sorted(decided['edit']))}" if decided.get("edit") else ""
        console.print(f"approval of [bold]{escape(approval['step'])}[/]: {PAST.get(decided['action'], decided['action'])} by {escape(decided['approver'])} at {decided['decided_at']}{escape(edits)}: {escape(decided.get('reason') or '')}", highlight=False)
        return
    console.print(f"[cyan]waiting for approval[/] of [bold]{escape(approval['step'])}[/] ({escape(approval.get('why') or '')})", highlight=False)
    console.print_json(json.dumps(approval.get("shows"), ensure_ascii=False))
    who = ", ".join(approval.get("approvers") or []) or "anyone who may approve"
    deadline = approval.get("deadline") or "none"
    console.print(f"approvers: {escape(who)}   deadline: {deadline} (then {approval.get('on_timeout')}{', escalated' if approval.get('escalated') else ''})", highlight=False)
    console.print(f"decide: [bold]flotilla runs approve {record.run_id} --as NAME --reason …[/] [--edit field=value] | [bold]flotilla runs reject {record.run_id} --as NAME --reason …[/]", highlight=False)


def _decide(run_id: str, action: str, approver: str, reason: str, edits: list[str], workflow: str | None, as_json: bool) -> None:
    from flotilla.graphs.backends.base import Decision
    from flotilla.graphs.catalog import load_workflow
    from flotilla.runtime.cli import _STATUS_EXIT, EXIT_OK, fail
    from flotilla.runtime.console import RunPrinter, print_result

    try:
        decision = Decision(action, approver, reason, parse_edits(edits) or None)  # type: ignore[arg-type]
    except FlotillaError as exc:
        raise fail(exc.message) from None
    store = _store()  # an unknown run is told before the runtime (models, rails, MCP) is built
    try:
        record = store.get_run(run_id)
    finally:
        store.engine.dispose()
    if record is None:
        raise fail(f"no run {run_id!r}; `flotilla runs list` lists runs")
    settings, runtime = load_runtime()
    console = Console(stderr=as_json)
    try:
        spec = load_workflow(workflow or (record.approval or {}).get("workflow_source") or record.workflow, settings.workflows)
    except FlotillaError as exc:
        runtime.close()
        raise fail(exc.message) from None
    result = run_on_runner(runtime, lambda runner: runner.decide(spec, run_id, decision, on_event=None if as_json else RunPrinter(console)))
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict(), ensure_ascii=False) + "\n")
    else:
        print_result(console, result, str(runtime.trace_file))
    rejected = action == "reject" and (result.error or {}).get("code") == "approval_rejected"
    raise typer.Exit(EXIT_OK if rejected else _STATUS_EXIT[result.status])


def approve(
    run_id: Annotated[str, typer.Argument(help="The run waiting for approval.")],
    approver: Annotated[str, typer.Option("--as", help="Who approves (kept in the audit chain).")],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the audit chain).")] = "",
    edit: Annotated[Optional[list[str]], typer.Option("--edit", help="FIELD=VALUE replacing a field of the output awaiting approval (repeatable).")] = None,
    workflow: Annotated[Optional[str], typer.Option("--workflow", help="The workflow file, if it moved since the run started.")] = None,
    as_json: AsJson = False,
) -> None:
    """Approve a run waiting for approval (optionally changing fields of the output it waits on); the run goes on."""
    _decide(run_id, "approve", approver, reason, edit or [], workflow, as_json)


def reject(
    run_id: Annotated[str, typer.Argument(help="The run waiting for approval.")],
    approver: Annotated[str, typer.Option("--as", help="Who rejects (kept in the audit chain).")],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the audit chain; required).")],
    workflow: Annotated[Optional[str], typer.Option("--workflow", help="The workflow file, if it moved since the run started.")] = None,
    as_json: AsJson = False,
) -> None:
    """Reject a run waiting for approval: it ends `blocked` (error code approval_rejected)."""
    from flotilla.runtime.cli import fail

    if not reason.strip():
        raise fail("give the reason for the rejection (--reason …); it is kept in the audit chain")
    _decide(run_id, "reject", approver, reason, [], workflow, as_json)


def expire(as_json: AsJson = False) -> None:
    """Apply the timeout policy to every approval whose deadline has passed (reject or escalate)."""
    from flotilla.graphs.approval import expire_due

    _, runtime = load_runtime()
    changed = run_on_runner(runtime, expire_due)
    if as_json:
        sys.stdout.write(json.dumps({"expired": [{"run_id": r, "outcome": o} for r, o in changed]}) + "\n")
        return
    console = Console()
    if not changed:
        console.print("no approval is past its deadline", highlight=False)
    for run_id, outcome in changed:
        console.print(f"run {run_id}: {outcome} (its approval passed its deadline)", highlight=False)


runs_app.command("list")(list_runs)
runs_app.command("show")(show)
runs_app.command("approve")(approve)
runs_app.command("reject")(reject)
runs_app.command("expire")(expire)
