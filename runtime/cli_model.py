"""`flotilla serve-model`: the embedded engine behind an OpenAI-compatible HTTP API. Wiring only."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from flotilla.audit.errors import FlotillaError

__all__ = ["serve_model"]


def serve_model(
    host: Annotated[str, typer.Option(help="Interface to bind; keep 127.0.0.1 unless a proxy guards it.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8088,
) -> None:
    """Serve the embedded model like vLLM: /v1/models, /v1/chat/completions (json_schema output)."""
    from flotilla.runtime.settings import load_settings

    err = Console(stderr=True)
    try:
        settings = load_settings()
        from flotilla.agents.models.embedded import get_engine  # heavy: torch + weights
        from flotilla.agents.models.server import create_model_server, run_model_server

        with err.status("loading the embedded model…"):
            engine = get_engine(settings.cache_dir)
    except FlotillaError as exc:
        err.print(f"[red]error:[/] {escape(exc.message)}", highlight=False)
        raise typer.Exit(2) from None
    err.print(f"[green]ready[/] {engine.model_name} ({engine.precision}, {engine.load_info['source']}) on http://{host}:{port}/v1")
    run_model_server(create_model_server(engine, default_max_tokens=settings.embedded_max_tokens), host=host, port=port)
