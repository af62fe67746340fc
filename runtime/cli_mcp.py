"""`flotilla mcp`: serve every workflow as an MCP tool over stdio (default) or streamable HTTP."""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from flotilla.audit.errors import FlotillaError

__all__ = ["mcp_app", "TOKEN_ENV"]

TOKEN_ENV = "FLOTILLA_MCP_TOKEN"

mcp_app = typer.Typer(name="mcp", help="Serve workflows as MCP tools (stdio, or --http).")


@mcp_app.callback(invoke_without_command=True)
def serve_mcp(
    http: Annotated[bool, typer.Option("--http", help="Serve streamable HTTP at /mcp instead of stdio.")] = False,
    host: Annotated[str, typer.Option(help="HTTP bind address (non-loopback needs $FLOTILLA_MCP_TOKEN).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8765,
    workflow: Annotated[list[str] | None, typer.Option("--workflow", "-w", help="Expose only these workflows.")] = None,
) -> None:
    """Every workflow becomes a tool: input text in, the run's output (structured) out."""
    import asyncio

    from flotilla.mcp_servers.gateway import Gateway, GatewayHttp
    from flotilla.runtime.settings import load_settings
    from flotilla.runtime.wiring import build_runtime

    try:
        settings = load_settings()
        runtimes = []

        def runner_factory():
            runtime = build_runtime(settings)
            runtimes.append(runtime)
            return runtime.runner

        gateway = Gateway(runner_factory, workflows=workflow or None, initiator="mcp:http" if http else "mcp:stdio", registered=settings.workflows)
        try:
            if not http:
                asyncio.run(gateway.run_stdio())
                return
            import uvicorn

            token = os.environ.get(TOKEN_ENV) or None
            app = GatewayHttp(gateway, token=token, host=host).app("/mcp")
            Console(stderr=True).print(f"MCP gateway on http://{host}:{port}/mcp ({'bearer token required' if token else 'loopback only, no token'})")
            uvicorn.run(app, host=host, port=port, log_level="warning")
        finally:
            for runtime in runtimes:
                runtime.close()
    except FlotillaError as exc:
        Console(stderr=True).print(f"[red]error:[/] {escape(exc.message)}", highlight=False)
        raise typer.Exit(2) from None
