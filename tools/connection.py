"""One pooled MCP session per server, opened on first use and reopened after it dies.

Why a dedicated owner task: the SDK's client is an anyio context (task groups, cancel
scopes) that must be entered and exited by the same task. The owner task enters it and
parks; callers from any task share its `ClientSession`, whose dispatcher correlates
concurrent requests by id. A failing or cancelled request therefore touches only its
caller, never its siblings or the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

import anyio

from flotilla.tools.config import HttpServerConfig, McpServerConfig, StdioServerConfig
from flotilla.tools.errors import ToolConnectionLost, ToolProtocolError, ToolServerUnavailable, ToolTimeout

# The MCP SDK (~30 MB with starlette, uvicorn, cryptography) is imported where a session is used,
# so a runtime whose runs never reach a tool never loads it; every configured server is lazy anyway.
if TYPE_CHECKING:
    from mcp import Client
    from mcp.client.session import ClientSession
    from mcp.shared.exceptions import MCPError
    from mcp_types import CallToolResult, Tool

__all__ = ["ServerConnection"]

log = logging.getLogger(__name__)

CLIENT_NAME, CLIENT_VERSION = "flotilla", "0.1.0"
_SESSION_TERMINATED = "Session terminated"  # streamable HTTP: the server no longer knows our session id


@dataclass(eq=False)
class _Live:
    client: Client
    owner: asyncio.Task[None]
    stop: anyio.Event
    stale: bool = False

    @property
    def session(self) -> ClientSession:
        return self.client.session

    def healthy(self) -> bool:
        if self.stale or self.owner.done():
            return False
        # The SDK exposes no public "closed" flag; its dispatcher sets `_closed` on EOF
        # (a stdio server that exited) and on shutdown. Reading it lets the next call reopen
        # *before* sending, which is safe for every tool, idempotent or not.
        dispatcher = getattr(self.session, "_dispatcher", None)
        return not getattr(dispatcher, "_closed", False)


@dataclass(eq=False)
class ServerConnection:
    """The pooled session of one configured MCP server."""

    name: str
    config: McpServerConfig
    errlog: TextIO | None = None
    """Where a stdio server's stderr goes (default: this process's stderr)."""
    generation: int = 0
    """Bumped on every (re)open, so the registry knows to re-list and re-check pins."""
    _live: _Live | None = field(default=None, init=False, repr=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)

    @property
    def connected(self) -> bool:
        return self._live is not None and self._live.healthy()

    async def session(self) -> ClientSession:
        live = self._live
        if live is not None and live.healthy():
            return live.session
        async with self._lock:
            live = self._live
            if live is not None and live.healthy():
                return live.session
            await self._close_locked()
            self._live = await self._open()
            self.generation += 1
            return self._live.session

    async def list_tools(self) -> list[Tool]:
        from mcp.shared.exceptions import MCPError
        from mcp_types import PaginatedRequestParams

        session = await self.session()
        tools: list[Tool] = []
        cursor: str | None = None
        try:
            with anyio.fail_after(self.config.connect_timeout_s):
                while True:
                    params = PaginatedRequestParams(cursor=cursor) if cursor else None
                    page = await session.list_tools(params=params)
                    tools.extend(page.tools)
                    cursor = page.next_cursor
                    if not cursor:
                        return tools
        except TimeoutError:
            raise ToolTimeout(f"MCP server {self.name!r} did not list its tools within {self.config.connect_timeout_s}s") from None
        except MCPError as exc:
            self._mark_stale(session)
            raise ToolProtocolError(f"MCP server {self.name!r} failed to list tools: {exc.message}") from None

    async def call_tool(
        self,
        tool: str,
        arguments: dict[str, Any],
        *,
        timeout_s: float | None = None,
        retry_safe: bool = False,
        meta: dict[str, Any] | None = None,
    ) -> CallToolResult:
        """Call `tool` on the pooled session.

        A session found dead before sending is reopened first (always safe). A connection lost
        while the call was in flight is retried once on a fresh session only when `retry_safe`
        (the server annotated the tool read-only or idempotent, or honours the idempotency key in
        `meta`); otherwise ToolConnectionLost. `meta` goes out as the request's `_meta`.
        """
        from mcp.shared.exceptions import MCPError
        from mcp_types import CONNECTION_CLOSED, INVALID_REQUEST, REQUEST_TIMEOUT

        timeout = timeout_s or self.config.timeout_s
        qualified = f"{self.name}.{tool}"
        for attempt in (1, 2):
            session = await self.session()
            try:
                return await session.call_tool(tool, arguments, read_timeout_seconds=timeout, meta=meta)  # type: ignore[arg-type]
            except MCPError as exc:
                if exc.code == REQUEST_TIMEOUT:
                    raise ToolTimeout(f"{qualified} did not answer within {timeout}s") from None
                expired = exc.code == INVALID_REQUEST and exc.message == _SESSION_TERMINATED
                if exc.code == CONNECTION_CLOSED or expired or await self._session_gone(session, exc):
                    self._mark_stale(session)
                    # An expired HTTP session means the server never ran the call: resend.
                    if attempt == 1 and (retry_safe or expired):
                        log.info("MCP server %r: connection lost, reconnecting for %s", self.name, qualified)
                        continue
                    raise ToolConnectionLost(
                        f"the connection to MCP server {self.name!r} dropped during {qualified}; it is not marked "
                        "read-only or idempotent, so it was not repeated (the session reopens on the next call)"
                    ) from None
                raise ToolProtocolError(f"{qualified} failed: {exc.message} (JSON-RPC error {exc.code})") from None
            except (RuntimeError, ValueError) as exc:  # input-required / malformed result from the server
                raise ToolProtocolError(f"{qualified} returned an unusable result: {exc}") from None
        raise AssertionError("unreachable")

    async def _session_gone(self, session: ClientSession, exc: MCPError) -> bool:
        """Whether an HTTP-level failure means our session is gone (e.g. the server restarted).

        Servers answer an unknown session id with 404 or 400, and some send a JSON-RPC body the
        SDK cannot correlate, so it reports a generic HTTP error. A ping on the same session
        tells the two apart: if the ping fails too, the session is dead.
        """
        from mcp_types import INTERNAL_ERROR

        if not isinstance(self.config, HttpServerConfig) or exc.code != INTERNAL_ERROR:
            return False
        try:
            with anyio.fail_after(min(5.0, self.config.connect_timeout_s)):
                await session.send_ping()
        except Exception:
            return True
        return False

    async def aclose(self) -> None:
        async with self._lock:
            await self._close_locked()

    # -- internals ---------------------------------------------------------------------

    def _mark_stale(self, session: ClientSession) -> None:
        live = self._live
        if live is not None and live.session is session:
            live.stale = True

    async def _open(self) -> _Live:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[Client] = loop.create_future()
        stop = anyio.Event()
        owner = asyncio.create_task(self._own(ready, stop), name=f"mcp-session:{self.name}")
        try:
            client = await asyncio.wait_for(asyncio.shield(ready), self.config.connect_timeout_s)
        except asyncio.CancelledError:
            owner.cancel()  # the caller gave up: do not leave a half-open session behind
            raise
        except TimeoutError:
            owner.cancel()
            await asyncio.gather(owner, return_exceptions=True)
            raise ToolTimeout(
                f"MCP server {self.name!r} did not complete the MCP handshake within {self.config.connect_timeout_s}s"
            ) from None
        except ToolServerUnavailable:
            raise
        except Exception as exc:
            raise ToolServerUnavailable(f"cannot start or reach MCP server {self.name!r}: {_describe(exc)}") from None
        return _Live(client=client, owner=owner, stop=stop)

    async def _own(self, ready: asyncio.Future[Client], stop: anyio.Event) -> None:
        from mcp import Client
        from mcp_types import Implementation

        try:
            async with contextlib.AsyncExitStack() as stack:
                transport = await self._transport(stack)
                client = Client(transport, mode="auto", client_info=Implementation(name=CLIENT_NAME, version=CLIENT_VERSION), cache=None)
                await stack.enter_async_context(client)
                ready.set_result(client)
                await stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, Exception) else ToolServerUnavailable("connection cancelled"))
            elif not isinstance(exc, asyncio.CancelledError):
                log.info("MCP server %r: session ended: %s", self.name, _describe(exc))
            if isinstance(exc, asyncio.CancelledError):
                raise

    async def _transport(self, stack: contextlib.AsyncExitStack) -> Any:
        from mcp.client.stdio import StdioServerParameters, stdio_client
        from mcp.client.streamable_http import streamable_http_client
        from mcp.shared._httpx_utils import create_mcp_http_client

        config = self.config
        if isinstance(config, StdioServerConfig):
            params = StdioServerParameters(
                command=config.command, args=config.args, env=config.env or None, cwd=config.cwd
            )
            return stdio_client(params, errlog=self.errlog or _stderr())
        assert isinstance(config, HttpServerConfig)
        http = await stack.enter_async_context(create_mcp_http_client(headers=config.resolved_headers()))
        return streamable_http_client(config.url, http_client=http)

    async def _close_locked(self) -> None:
        live, self._live = self._live, None
        if live is None:
            return
        live.stop.set()
        # stdio shutdown closes stdin, then SIGTERM, then SIGKILL: bounded by the SDK (~6 s).
        done, _ = await asyncio.wait({live.owner}, timeout=10)
        if not done:
            live.owner.cancel()
            await asyncio.gather(live.owner, return_exceptions=True)


def _stderr() -> TextIO:
    # Under pytest's capture sys.stderr has no file descriptor; a subprocess needs one.
    try:
        sys.stderr.fileno()
        return sys.stderr
    except (AttributeError, OSError, ValueError):
        return sys.__stderr__


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
