"""Rich rendering of runs for the terminal."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.syntax import Syntax

from flotilla.graphs.runner import RunEvent, RunResult

__all__ = ["RunPrinter", "print_result"]


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
            self.console.print(f"[yellow]note[/] {data['message']}")
        elif event.kind == "step":
            if data.get("ok"):
                tokens = f"{data['input_tokens']}→{data['output_tokens']} tok"
                extra = " [yellow](repaired)[/]" if data.get("repaired") else ""
                self.console.print(
                    f"[green]✓[/] [bold]{data['agent']:<8}[/] {data['model']}  {data['latency_ms']:.0f} ms  {tokens}{extra}"
                )
                self.console.print(f"    [dim]{_brief(data['output'])}[/]", highlight=False)
                for note in data.get("notes") or []:
                    self.console.print(f"    [yellow]{note}[/]")
            else:
                err = data.get("error") or {}
                self.console.print(f"[red]✗[/] [bold]{data['agent']:<8}[/] {err.get('type')}: {err.get('message')}")


def print_result(console: Console, result: RunResult, trace_file: str) -> None:
    colour = {"succeeded": "green", "failed": "red", "blocked": "magenta"}[result.status]
    if result.output is not None:
        body = Syntax(json.dumps(result.output, indent=2, ensure_ascii=False), "json", word_wrap=True)
        console.print(Panel(body, title=f"output of {result.workflow}", border_style=colour))
    if result.error:
        console.print(f"[{colour}]{result.status}[/]: {result.error['type']}: {result.error['message']}")
    console.print(f"[{colour}]{result.status}[/]  run id [bold]{result.run_id}[/]  trace → {trace_file}")
