"""`flotilla serve`: one HTTP app — workflows as MCP tools at /mcp, the audit page at /audit.

Each front door has its own token: FLOTILLA_MCP_TOKEN runs workflows, FLOTILLA_AUDIT_TOKEN
(the compliance role) reads the trail. Without an MCP token the server binds loopback only.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from flotilla.audit.errors import FlotillaError

if TYPE_CHECKING:  # FastAPI and the settings load when the server starts, not at `flotilla --help`
    from fastapi import FastAPI

    from flotilla.runtime.settings import Settings

__all__ = ["create_app", "serve"]

MCP_TOKEN_ENV = "FLOTILLA_MCP_TOKEN"


def create_app(settings: Settings, *, host: str = "127.0.0.1", mcp_token: str | None = None) -> FastAPI:
    from fastapi import FastAPI
    from starlette.routing import Route

    from flotilla.mcp_servers.gateway import Gateway, GatewayHttp
    from flotilla.runtime.wiring import build_runtime

    runtime = build_runtime(settings)
    gateway = Gateway(lambda: runtime.runner, initiator="mcp:http", registered=settings.workflows)
    mcp_http = GatewayHttp(gateway, token=mcp_token, host=host)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            async with mcp_http.lifespan():  # closes the runner (MCP sessions, checkpointer) on exit
                yield
        finally:
            runtime.close()

    app = FastAPI(title="flotilla", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.router.routes.append(Route("/mcp", mcp_http.asgi, methods=["GET", "POST", "DELETE"]))

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    if runtime.audit_store is not None and settings.audit_token is not None:
        from flotilla.audit.web.app import create_audit_app

        app.mount("/audit", create_audit_app(runtime.audit_store, settings.audit_token.get_secret_value()))
    if runtime.telemetry.metrics is not None:
        from flotilla.runtime.metrics_route import add_metrics_route

        add_metrics_route(app, runtime.telemetry.metrics, metrics_tokens(settings))
    app.state.runtime = runtime
    return app


def metrics_tokens(settings: Settings) -> list[str]:
    """Bearer tokens `/metrics` accepts: its own, and the compliance role's (who may read the trail)."""
    return [t.get_secret_value() for t in (settings.metrics_token, settings.audit_token) if t is not None]


def serve(
    host: Annotated[str, typer.Option(help="Bind address; anything but loopback needs $FLOTILLA_MCP_TOKEN.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8080,
) -> None:
    """Serve workflows as MCP tools at /mcp (bearer auth) and the audit page at /audit."""
    import uvicorn

    from flotilla.runtime.settings import load_settings

    console = Console(stderr=True)
    try:
        settings = load_settings()
        token = os.environ.get(MCP_TOKEN_ENV) or None
        app = create_app(settings, host=host, mcp_token=token)
    except FlotillaError as exc:
        console.print(f"[red]error:[/] {escape(exc.message)}", highlight=False)
        raise typer.Exit(2) from None
    console.print(f"flotilla on http://{host}:{port}: /mcp ({'bearer token' if token else 'loopback only, no token'})", highlight=False)
    if settings.audit_token is None:
        console.print("  /audit is off: set FLOTILLA_AUDIT_TOKEN (the compliance role's token) to serve it")
    else:
        console.print(f"  /audit for the compliance role (FLOTILLA_AUDIT_TOKEN)")
    if settings.metrics and metrics_tokens(settings):
        console.print("  /metrics for Prometheus (bearer FLOTILLA_METRICS_TOKEN or FLOTILLA_AUDIT_TOKEN)")
    elif settings.metrics:
        console.print("  /metrics is off: set FLOTILLA_METRICS_TOKEN (the token your Prometheus scraper sends) to serve it")
    uvicorn.run(app, host=host, port=port, log_level="warning")
