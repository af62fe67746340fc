"""Rich rendering of runs for the terminal, and flotilla's own progress while something slow loads."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.syntax import Syntax

if TYPE_CHECKING:  # `loading` is used by wiring before any run exists; keep this module cheap
    from flotilla.graphs.runner import RunEvent, RunResult

__all__ = ["RunPrinter", "print_result", "STATUS_COLOUR", "loading"]


@contextlib.contextmanager
def loading(message: str) -> Iterator[None]:
    """A spinner on stderr while a model or engine loads. Only on a terminal: piped output stays
    clean, and libraries' own bars are switched off (flotilla.agents.models.quiet)."""
    console = Console(stderr=True)
    if not console.is_terminal:
        yield
        return
    with console.status(f"{message}…"):
        yield

STATUS_COLOUR = {
    "succeeded": "green",
    "needs_review": "yellow",
    "waiting_approval": "cyan",
    "blocked": "magenta",
    "failed": "red",
    "cancelled": "bright_black",
}


def _brief(output: Any, limit: int = 160) -> str:
    text = json.dumps(output, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class RunPrinter:
    """Prints each agent step as it completes."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def __call__(self, event: RunEvent) -> None:
        data = event.data
        if event.kind == "started":
            verb = "resuming" if data.get("resumed") else "running"
            self.console.print(f"[bold]{verb}[/] workflow [cyan]{data['workflow']}[/]  run [dim]{event.run_id}[/]")
        elif event.kind == "notice":
            self.console.print(f"[yellow]note[/] {escape(data['message'])}", highlight=False)
        elif event.kind == "step":
            if data.get("ok"):
                # A tool or function node says what produced its output; a model step, its model and tokens.
                tokens = "" if data.get("produced_by") else f"  {data['input_tokens']}→{data['output_tokens']} tok"
                extra = " [yellow](repaired)[/]" if data.get("repaired") else ""
                self.console.print(
                    f"[green]✓[/] [bold]{data['agent']:<8}[/] {escape(data.get('produced_by') or str(data['model']))}  {data['latency_ms']:.0f} ms{tokens}{extra}"
                )
                self.console.print(f"    [dim]{_brief(data['output'])}[/]", highlight=False)
                for note in data.get("notes") or []:
                    self.console.print(f"    [yellow]{escape(note)}[/]")
            else:
                err = data.get("error") or {}
                self.console.print(f"[red]✗[/] [bold]{data['agent']:<8}[/] {err.get('type')}: {escape(str(err.get('message')))}")


def print_result(console: Console, result: RunResult, trace_file: str) -> None:
    colour = STATUS_COLOUR.get(result.status, "white")
    if result.output is not None:
        body = Syntax(json.dumps(result.output, indent=2, ensure_ascii=False), "json", word_wrap=True)
        console.print(Panel(body, title=f"output of {result.workflow}", border_style=colour))
    if result.status == "needs_review":  # the output is above; say plainly why a person must check it
        console.print(f"[{colour}]needs review[/]: a person must check this output before it is used:")
        for reason in (result.error or {}).get("reasons", []):
            console.print(f"  [bold]{reason['step']}[/]: {reason['reason']}", highlight=False)
    elif result.status == "waiting_approval" and result.approval:  # paused: say what for, and how to decide
        approval = result.approval
        console.print(Panel(Syntax(json.dumps(approval.get("shows"), indent=2, ensure_ascii=False), "json", word_wrap=True), title=f"awaiting approval: {approval['step']}", border_style=colour))
        console.print(f"[{colour}]waiting for approval[/] of [bold]{escape(str(approval['step']))}[/] ({escape(str(approval.get('why', '')))}); deadline {approval.get('deadline') or 'none'}", highlight=False)
        console.print(f"  approve: flotilla runs approve {result.run_id} --as NAME --reason … [--edit field=value]", highlight=False, soft_wrap=True)
        console.print(f"  reject:  flotilla runs reject {result.run_id} --as NAME --reason …", highlight=False, soft_wrap=True)
    elif result.error:
        console.print(f"[{colour}]{result.status}[/]: {result.error['type']}: {escape(result.error['message'])}", highlight=False)
    console.print(f"[{colour}]{result.status}[/]  run id [bold]{result.run_id}[/]  trace → {trace_file}")
