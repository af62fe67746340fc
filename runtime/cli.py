"""The `flotilla` command. Wires settings, models, telemetry and stores; holds no logic."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="flotilla",
    help="Multi-agent orchestration runtime over MCP.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Sub-apps (one line each, registered by their owners):


def main() -> None:
    app()
