"""`flotilla serve`: one HTTP app — workflows as MCP tools at /mcp, the audit page at /audit.

Each front door has its own token: FLOTILLA_MCP_TOKEN runs workflows, FLOTILLA_AUDIT_TOKEN
(the compliance role) reads the trail. Without an MCP token the server binds loopback only.
The HTTP run API at /v1/runs (runtime/api_runs.py) takes API tokens with scopes (submit, read,
approve); those with `approve` also sign approvers in on the audit page.
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

    from flotilla.audit.web.approvals import Approvals
    from flotilla.runtime.api_auth import TokenTable
    from flotilla.runtime.settings import Settings
    from flotilla.runtime.wiring import Runtime

__all__ = ["create_app", "serve"]

MCP_TOKEN_ENV = "FLOTILLA_MCP_TOKEN"


def create_app(settings: Settings, *, host: str = "127.0.0.1", mcp_token: str | None = None) -> FastAPI:
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse
    from starlette.routing import Route

    from flotilla.mcp_servers.gateway import Gateway, GatewayHttp
    from flotilla.runtime.api_auth import TokenTable
    from flotilla.runtime.api_runs import add_run_api
    from flotilla.runtime.cli_recover import serve_recovery
    from flotilla.runtime.wiring import build_runtime

    tokens = TokenTable.from_settings(settings.api_tokens, settings.api_token)  # a ConfigError before anything starts
    runtime = build_runtime(settings)
    gateway = Gateway(lambda: runtime.runner, initiator="mcp:http", registered=settings.workflows)
    mcp_http = GatewayHttp(gateway, token=mcp_token, host=host)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            async with mcp_http.lifespan():  # closes the runner (MCP sessions, checkpointer) on exit
                try:
                    async with serve_recovery(settings, runtime.runner):  # runs whose process died resume here
                        yield
                finally:
                    if runtime.backend is not None:  # its runs stop before the runner closes
                        await runtime.backend.aclose()
        finally:
            runtime.close()

    app = FastAPI(title="flotilla", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.router.routes.append(Route("/mcp", mcp_http.asgi, methods=["GET", "POST", "DELETE"]))

    @app.get("/healthz", response_model=None)
    async def healthz():  # noqa: ANN202 — no annotation: this module's are strings, FastAPI would look them up
        """Open to all: `ok`, or `degraded` (503) with the reason the run backend gives (None: healthy)."""
        health = getattr(runtime.backend, "health", None)
        reason = await health() if health is not None else None
        if reason is None:
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "degraded", "reason": reason}, status_code=503)

    add_run_api(app, runtime.backend, tokens)

    if runtime.audit_store is not None and settings.audit_token is not None:
        from flotilla.audit.web.app import create_audit_app

        app.mount("/audit", create_audit_app(runtime.audit_store, settings.audit_token.get_secret_value(), approvals=audit_approvals(runtime, tokens)))
    if runtime.telemetry.metrics is not None:
        from flotilla.runtime.metrics_route import add_metrics_route

        add_metrics_route(app, runtime.telemetry.metrics, metrics_tokens(settings))
    app.state.runtime = runtime
    return app


def audit_approvals(runtime: Runtime, tokens: TokenTable) -> Approvals | None:
    """The audit page's approver role: API tokens with the approve scope, never the audit token."""
    from flotilla.audit.web.approvals import Approvals
    from flotilla.graphs.backends.base import Decision

    backend, audit = runtime.backend, runtime.settings.audit_token
    approvers = {s: n for s, n in tokens.secrets_with("approve").items() if audit is None or s != audit.get_secret_value()}
    if backend is None or not approvers:
        return None

    def pending(run_id: str) -> dict | None:
        record = runtime.runs.get_run(run_id)
        return record.approval if record is not None and record.status == "waiting_approval" else None

    async def decide(run_id: str, action: str, approver: str, reason: str) -> object:
        return await backend.decide(run_id, Decision(action, approver, reason))  # type: ignore[arg-type]

    return Approvals(approvers, pending, decide)


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
    if settings.api_tokens or settings.api_token:
        console.print("  /v1/runs: the run API for API tokens (FLOTILLA_API_TOKEN, api_tokens in flotilla.yaml); schema at /openapi.json")
    else:
        console.print("  /v1/runs answers 401: set FLOTILLA_API_TOKEN (or api_tokens in flotilla.yaml) to use the run API")
    if settings.metrics and metrics_tokens(settings):
        console.print("  /metrics for Prometheus (bearer FLOTILLA_METRICS_TOKEN or FLOTILLA_AUDIT_TOKEN)")
    elif settings.metrics:
        console.print("  /metrics is off: set FLOTILLA_METRICS_TOKEN (the token your Prometheus scraper sends) to serve it")
    uvicorn.run(app, host=host, port=port, log_level="warning")
