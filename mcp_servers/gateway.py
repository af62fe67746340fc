"""The gateway: every workflow is an MCP tool, over stdio (`flotilla mcp`) or streamable HTTP.

A tool call runs the workflow on the input text and returns the run's output as structured
content (plus the same JSON as text). Each finished agent step is a progress notification;
a cancelled call (the client sends `notifications/cancelled`, or drops the HTTP stream)
cancels the run, which is recorded as `cancelled`. An optional `idempotency_key` argument means
what the HTTP API's Idempotency-Key header does: a repeated call with it starts no second run and
returns the first run's result.

Statuses (graphs/status.py): `succeeded` returns the result; `needs_review` also returns it —
the run finished and its output is real, so it is not a tool error — with `status` first, the
reasons in `review`, and a first text block that says a person must check it; `failed` and
`blocked` are tool errors (`isError`), naming the run so `flotilla audit` can show it;
`waiting_approval` is not an error either: the result says what the run waits for and how to
decide it — the gateway's `approve_run` / `reject_run` tools (graphs/approval.py) do.

HTTP: `GatewayHttp` wraps the SDK's streamable-HTTP transport in a bearer-token check. With
no token configured it refuses any non-loopback host. The token is compared in constant
time and never logged.
"""

# No `from __future__ import annotations` here: the per-workflow tool functions carry real
# annotation objects (the input's description), which the SDK reads to build the schema.

import asyncio
import contextlib
import functools
import hmac
import ipaddress
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from flotilla.audit.errors import ConfigError
from flotilla.graphs import RunEvent, WorkflowRunner, WorkflowSpec, list_workflows, load_workflow
from flotilla.graphs.outcome import RunResult

__all__ = ["Gateway", "GatewayHttp", "WorkflowToolResult", "check_bind", "RunnerFactory"]

log = logging.getLogger(__name__)

RunnerFactory = Callable[[], WorkflowRunner]
"""Builds the runner the gateway uses; called once, lazily, inside the serving event loop."""

IDEMPOTENCY_KEY = Field(
    min_length=1, max_length=200,
    description="Optional. The same key never starts two runs (as the HTTP API's Idempotency-Key): a repeated call returns the first run's result.",
)
KEY_POLL_S = 0.1
"""How often a repeated call looks whether the run its key started has stopped going."""


class WorkflowToolResult(BaseModel):
    """What a workflow tool returns (structured content)."""

    status: str = Field(
        description="succeeded; needs_review: finished, but a person must check the output (see `review`); "
        "waiting_approval: paused until a person approves or rejects it (see `approval`; tools approve_run / reject_run)."
    )
    run_id: str
    workflow: str
    output: Any = None
    review: list[dict[str, str]] = Field(default_factory=list, description="Why the run needs review: each failing step and the reason.")
    steps: int = Field(description="Agent steps that ran.")
    notices: list[str] = Field(default_factory=list)
    approval: dict[str, Any] | None = Field(default=None, description="What a waiting run waits for: the step, what the approver sees, the deadline.")


class Gateway:
    """An MCP server with one tool per workflow."""

    def __init__(
        self,
        runner_factory: RunnerFactory,
        *,
        workflows: Sequence[str | WorkflowSpec] | None = None,
        initiator: str = "mcp",
        name: str = "flotilla",
        registered: Mapping[str, str] | None = None,
        approvals: bool | None = None,
    ) -> None:
        """`workflows`: names, paths or specs to expose (default: every built-in and registered one).
        `registered`: Python workflows by name → `module:factory` (flotilla.yaml `workflows:`).
        `approvals`: also offer the `approve_run` / `reject_run` tools (default: when a workflow
        exposed can pause for approval)."""
        self._registered = registered
        self._runner_factory = runner_factory
        self._runner: WorkflowRunner | None = None
        self._runner_lock = asyncio.Lock()
        self.initiator = initiator
        names = workflows or list_workflows(registered, python=True)
        specs = [w if isinstance(w, WorkflowSpec) else load_workflow(w, registered) for w in names]
        self.workflows = {spec.name: spec for spec in specs}
        self.server = MCPServer(
            name=name,
            instructions="Each tool runs a flotilla workflow on the text you pass as `input` and returns its result.",
            version="0.1.0",
            log_level="WARNING",
        )
        for spec in specs:
            self._add_tool(spec)
        if approvals or (approvals is None and any(_can_pause(spec) for spec in specs)):
            self._add_approval_tools()

    async def runner(self) -> WorkflowRunner:
        if self._runner is None:
            async with self._runner_lock:
                if self._runner is None:
                    self._runner = self._runner_factory()
        return self._runner

    async def aclose(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.aclose()

    async def run_stdio(self) -> None:
        try:
            await self.server.run_stdio_async()
        finally:
            await self.aclose()

    def _add_tool(self, spec: WorkflowSpec) -> None:
        gateway = self

        async def run_workflow(
            input: Annotated[str, Field(description=spec.input.description)],
            ctx: Context,
            idempotency_key: Annotated[str | None, IDEMPOTENCY_KEY] = None,
        ) -> Annotated[CallToolResult, WorkflowToolResult]:
            return await gateway._run(spec, input, ctx, idempotency_key)

        description = " ".join((spec.description or f"Run the {spec.name} workflow.").split())
        agents = f" (Agents: {', '.join(spec.agents)}.)" if spec.agents else ""  # a Python workflow builds its own
        self.server.add_tool(
            run_workflow,
            name=spec.name,
            title=spec.name.replace("_", " ").capitalize(),
            description=f"{description}{agents}",
            annotations=ToolAnnotations(read_only_hint=False, idempotent_hint=False, destructive_hint=False, open_world_hint=False),
            structured_output=True,
        )

    async def _run(self, spec: WorkflowSpec, text: str, ctx: Context, idempotency_key: str | None = None) -> CallToolResult:
        runner = await self.runner()
        run_id = uuid.uuid4().hex
        if idempotency_key:  # the same key as over HTTP (Submission.idempotency_key): one run per key, whichever door
            claim = functools.partial(runner.runs.claim_run, owner=runner.owner)  # its process dying first: settled by recovery
            holder = await asyncio.to_thread(claim, run_id, spec.name, spec.version(), idempotency_key, self.initiator)
            if holder != run_id:
                return self._tool_result(await self._run_of_key(runner, holder, spec, idempotency_key))
        total = len(spec.agents) if spec.kind == "workflow" else None  # research fans out; Python builds its own
        steps: list[dict[str, Any]] = []

        async def on_event(event: RunEvent) -> None:
            if event.kind == "notice" and event.data.get("event") == "sub_agent_started":
                await ctx.report_progress(len(steps), total, event.data["message"])
                return
            if event.kind != "step":
                return
            steps.append(event.data)
            status = "ok" if event.data.get("ok", True) else "failed"
            await ctx.report_progress(len(steps), total, f"{event.data.get('agent', 'step')}: {status}")

        await ctx.report_progress(0, total, f"run {run_id} started")
        # A cancelled call cancels this task: the runner records the run as `cancelled` and re-raises.
        result = await runner.run(spec, text, run_id=run_id, initiator=self.initiator, on_event=on_event)
        return self._tool_result(result)

    @staticmethod
    async def _run_of_key(runner: WorkflowRunner, run_id: str, spec: WorkflowSpec, key: str) -> RunResult:
        """The run an earlier call with this key started, once it stops going (this call waits as
        that one does); a key already used for another workflow is the caller's mistake."""
        while True:
            record = await asyncio.to_thread(runner.runs.get_run, run_id)
            if record is None:
                raise ToolError(f"idempotency key {key!r} names run {run_id}, which no longer exists (pruned); use a new key")
            if record.workflow != spec.name:
                raise ToolError(f"idempotency key {key!r} already started run {run_id} of workflow {record.workflow}, not {spec.name}; use a new key")
            if record.status not in ("pending", "running"):
                return RunResult(run_id, record.workflow, record.status, record.output, record.steps, record.error, approval=record.approval)  # type: ignore[arg-type]
            await asyncio.sleep(KEY_POLL_S)

    def _tool_result(self, result: Any) -> CallToolResult:
        if result.status not in ("succeeded", "needs_review", "waiting_approval"):
            error = result.error or {}
            raise ToolError(
                f"run {result.run_id} {result.status}: {error.get('message', 'no details')} "
                f"({error.get('code', 'error')}; `flotilla audit` has the full record)"
            )
        review = list((result.error or {}).get("reasons", [])) if result.status == "needs_review" else []
        structured = WorkflowToolResult(
            status=result.status,
            run_id=result.run_id,
            workflow=result.workflow,
            output=result.output,
            review=review,
            steps=len(result.steps),
            notices=result.notices,
            approval=result.approval,
        ).model_dump(mode="json")
        content = [TextContent(type="text", text=json.dumps(structured, ensure_ascii=False))]
        if review:  # say it before the data, in words: a client model reading the text must not miss it
            lines = "\n".join(f"- {r['step']}: {r['reason']}" for r in review)
            warning = f"NEEDS REVIEW: run {result.run_id} finished, but a person must check its output before it is used:\n{lines}"
            content.insert(0, TextContent(type="text", text=warning))
        if result.status == "waiting_approval":  # in words first: the run is not done, and who can finish it
            step = (result.approval or {}).get("step")
            waiting = (
                f"WAITING FOR APPROVAL: run {result.run_id} paused at {step}; nothing more happens until a person decides "
                f"(tools approve_run / reject_run with run_id {result.run_id}, or `flotilla runs approve|reject {result.run_id}`)."
            )
            content.insert(0, TextContent(type="text", text=waiting))
        return CallToolResult(content=content, structured_content=structured)

    def _add_approval_tools(self) -> None:
        gateway = self
        run_id_field = Field(description="The id of the run waiting for approval.")
        approver_field = Field(description="Who decides (kept in the audit chain).")

        async def approve_run(
            run_id: Annotated[str, run_id_field],
            approver: Annotated[str, approver_field],
            reason: Annotated[str, Field(description="Why (kept in the audit chain).")] = "",
            edit: Annotated[dict[str, Any] | None, Field(description="Fields replacing those of the output awaiting approval.")] = None,
        ) -> Annotated[CallToolResult, WorkflowToolResult]:
            return await gateway._decide(run_id, "approve", approver, reason, edit)

        async def reject_run(
            run_id: Annotated[str, run_id_field],
            approver: Annotated[str, approver_field],
            reason: Annotated[str, Field(description="Why (kept in the audit chain).")],
        ) -> Annotated[CallToolResult, WorkflowToolResult]:
            return await gateway._decide(run_id, "reject", approver, reason, None)

        hints = ToolAnnotations(read_only_hint=False, idempotent_hint=False, destructive_hint=False, open_world_hint=False)
        self.server.add_tool(approve_run, name="approve_run", title="Approve a run", description="Approve a flotilla run waiting for approval (optionally changing fields of the output it waits on); the run goes on and its result is returned.", annotations=hints, structured_output=True)
        self.server.add_tool(reject_run, name="reject_run", title="Reject a run", description="Reject a flotilla run waiting for approval; it ends blocked (approval_rejected).", annotations=hints, structured_output=True)

    async def _decide(self, run_id: str, action: str, approver: str, reason: str, edit: dict[str, Any] | None) -> CallToolResult:
        from flotilla.audit.errors import FlotillaError
        from flotilla.graphs.backends.base import Decision

        runner = await self.runner()
        try:
            record = runner.runs.get_run(run_id)
            approval = (record.approval or {}) if record is not None else {}
            name = approval.get("workflow") or (record.workflow if record is not None else "")
            spec = self.workflows.get(name) or (load_workflow(approval.get("workflow_source") or name, self._registered) if record is not None else None)
            result = await runner.decide(spec, run_id, Decision(action, approver, reason, edit))  # type: ignore[arg-type]
        except FlotillaError as exc:
            raise ToolError(f"{exc.message} ({exc.code})") from None
        if result.status == "blocked" and (result.error or {}).get("code") == "approval_rejected":
            structured = WorkflowToolResult(status="blocked", run_id=result.run_id, workflow=result.workflow, steps=len(result.steps)).model_dump(mode="json")
            text = f"run {result.run_id} rejected: it ended blocked ({result.error['message']})"
            return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=structured)
        return self._tool_result(result)


def _can_pause(spec: WorkflowSpec) -> bool:
    return spec.settings.approval_on_review is not None or any(agent.approval is not None for agent in spec.agents.values())


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve the gateway beyond this machine without a bearer token."""
    if not token and not _is_loopback(host):
        raise ConfigError(
            f"refusing to serve MCP over HTTP on {host} without a bearer token: set $FLOTILLA_MCP_TOKEN "
            "(clients send `Authorization: Bearer <token>`), or bind 127.0.0.1"
        )


class _BearerAuth:
    """401 unless `Authorization: Bearer <token>` matches (constant-time compare)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self._authorised(scope):
            body = json.dumps({"error": "unauthorized", "detail": "send Authorization: Bearer <token>"}).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"www-authenticate", b'Bearer realm="flotilla"'),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)

    def _authorised(self, scope: Scope) -> bool:
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, credential = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(credential.strip(), self._token)
        return False


class GatewayHttp:
    """The gateway over streamable HTTP: an ASGI endpoint plus the lifespan it needs.

    Mount in an existing app (the session manager must run for the app's lifetime):

        http = GatewayHttp(gateway, token=token, host=host)
        app.router.routes.append(Route("/mcp", http.asgi, methods=["GET", "POST", "DELETE"]))
        async with http.lifespan(): ...          # inside the app's lifespan

    or serve it alone: `uvicorn.run(http.app(), host=host, port=port)`.
    """

    def __init__(self, gateway: Gateway, *, token: str | None, host: str = "127.0.0.1", json_response: bool = False) -> None:
        check_bind(host, token)
        self.gateway = gateway
        # Builds the SDK's session manager (DNS-rebinding protection is on for loopback hosts).
        gateway.server.streamable_http_app(host=host, json_response=json_response)
        self._manager = gateway.server.session_manager
        endpoint: ASGIApp = StreamableHTTPASGIApp(self._manager)
        self.asgi: ASGIApp = _BearerAuth(endpoint, token) if token else endpoint

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        try:
            async with self._manager.run():
                yield
        finally:
            await self.gateway.aclose()

    def app(self, path: str = "/mcp") -> Starlette:
        @contextlib.asynccontextmanager
        async def lifespan(_: Starlette) -> AsyncIterator[None]:
            async with self.lifespan():
                yield

        return Starlette(routes=[Route(path, self.asgi, methods=["GET", "POST", "DELETE"])], lifespan=lifespan)
