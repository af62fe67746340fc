"""The tool hub: every configured MCP server's tools under `server.tool`, called through the pool.

A call goes: allowlist → pin check → argument validation (JSON Schema) → pooled session,
inside an OTel span `execute_tool <server.tool>`. Whatever is refused is a typed error and
an event on that span, so the trail shows what an agent tried and why it was stopped.

The span is the GenAI `execute_tool` span with the MCP client attributes on it, as the MCP
conventions ask of an outer tool-execution span (semantic-conventions-genai model/mcp/spans.yaml):
kind CLIENT, `mcp.method.name=tools/call`, `network.transport` pipe (stdio) or tcp (HTTP).

Every call carries an idempotency key in its `_meta` (tools/idempotency.py), recorded on the span
as `flotilla.tool.idempotency_key`. With a journal (tools/journal.py), calls to tools not marked
read-only are recorded before and after sending, so a step that runs again after a crash never
repeats a side effect blindly: see the journal's docstring for what happens to each call.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import urlsplit

from jsonschema import validators
from jsonschema.exceptions import SchemaError
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, StatusCode, Tracer

from flotilla.tools.allowlist import Allowlist
from flotilla.audit.errors import ConfigError
from flotilla.audit.semconv import TOOL_IDEMPOTENCY_KEY, TOOL_REPLAYED, TOOL_RESENT
from flotilla.tools.config import SERVER_NAME_PATTERN, HttpServerConfig, McpServerConfig
from flotilla.tools.connection import ServerConnection
from flotilla.tools.errors import ToolArgumentsInvalid, ToolBlocked, ToolCallUncertain, ToolError, ToolNotAllowed, UnknownTool
from flotilla.tools.idempotency import HONOURS_KEYS_META, IDEMPOTENCY_META_KEY, CallScope, current_scope, idempotency_key
from flotilla.tools.journal import ToolCallJournal
from flotilla.tools.pins import PinState, PinStore

if TYPE_CHECKING:  # the MCP SDK loads when a server is first connected (tools/connection.py)
    from mcp_types import CallToolResult, Tool

__all__ = ["ToolHub", "ToolInfo", "ToolResult", "ToolView"]

_MAX_ERRORS_SHOWN = 5


@dataclass(frozen=True, slots=True)
class ToolInfo:
    server: str
    tool: Tool
    pin: PinState
    server_honours_keys: bool = False
    """flotilla.yaml says this server honours idempotency keys (`honours_idempotency_keys: true`)."""

    @property
    def name(self) -> str:
        return f"{self.server}.{self.tool.name}"

    @property
    def description(self) -> str:
        return self.tool.description or ""

    @property
    def input_schema(self) -> dict[str, Any]:
        return self.tool.input_schema

    @property
    def read_only(self) -> bool:
        hints = self.tool.annotations
        return bool(hints and hints.read_only_hint)

    @property
    def honours_keys(self) -> bool:
        """A repeated idempotency key gets the first result (declared in the tool's `_meta`, or by the operator)."""
        return self.server_honours_keys or bool((self.tool.meta or {}).get(HONOURS_KEYS_META))

    @property
    def retry_safe(self) -> bool:
        """Sending this call again cannot act twice."""
        hints = self.tool.annotations
        return bool(hints and (hints.read_only_hint or hints.idempotent_hint)) or self.honours_keys

    @property
    def blocked(self) -> bool:
        return self.pin is not PinState.PINNED


@dataclass(frozen=True, slots=True)
class ToolResult:
    name: str
    arguments: dict[str, Any]
    is_error: bool
    text: str
    """The text content blocks, joined; other blocks are summarised (`[image/png]`)."""
    structured: dict[str, Any] | None
    latency_ms: float
    idempotency_key: str | None = None
    replayed: bool = False
    """The call had finished before an interruption: this is its recorded result, nothing was sent."""

    def observation(self, limit: int = 4000) -> str:
        """What a model sees: structured content when there is some, else the text."""
        body = json.dumps(self.structured, ensure_ascii=False) if self.structured is not None else self.text
        return body if len(body) <= limit else body[:limit] + " …[truncated]"


@dataclass(eq=False)
class _Listing:
    generation: int
    tools: dict[str, ToolInfo]


class ToolHub:
    """All MCP servers of one runtime, their pooled sessions and pins. Share one per process."""

    def __init__(
        self,
        servers: Mapping[str, McpServerConfig],
        *,
        pins: PinStore,
        tracer: Tracer | None = None,
        errlog: TextIO | None = None,
        journal: ToolCallJournal | None = None,
    ) -> None:
        for name in servers:
            if not SERVER_NAME_PATTERN.match(name):
                raise ConfigError(f"MCP server name {name!r} may only use letters, digits, '_' and '-' (it prefixes `server.tool`)")
        self._connections = {name: ServerConnection(name, cfg, errlog=errlog) for name, cfg in servers.items()}
        self.pins = pins
        self._tracer = tracer or trace.NoOpTracer()
        self._listings: dict[str, _Listing] = {}
        self._list_locks: dict[str, asyncio.Lock] = {name: asyncio.Lock() for name in servers}
        self._validators: dict[tuple[str, int], Any] = {}
        self.journal = journal
        """Where side-effecting calls of runs are recorded before and after sending (None: not recorded)."""

    @property
    def server_names(self) -> list[str]:
        return sorted(self._connections)

    def connection(self, server: str) -> ServerConnection:
        try:
            return self._connections[server]
        except KeyError:
            known = ", ".join(self.server_names) or "none"
            raise UnknownTool(f"no MCP server named {server!r} in flotilla.yaml `mcp_servers:` (configured: {known})") from None

    async def server_tools(self, server: str) -> dict[str, ToolInfo]:
        """The server's tools with their pin state; listed once per session (re-listed after a reconnect)."""
        conn = self.connection(server)
        listing = self._listings.get(server)
        if listing is not None and listing.generation == conn.generation and conn.connected:
            return listing.tools
        async with self._list_locks[server]:
            listing = self._listings.get(server)
            if listing is not None and listing.generation == conn.generation and conn.connected:
                return listing.tools
            tools = await conn.list_tools()
            states = self.pins.check(server, tools)
            honours = conn.config.honours_idempotency_keys
            listing = _Listing(conn.generation, {t.name: ToolInfo(server, t, states[t.name], honours) for t in tools})
            prefix = f"{server}."
            self._validators = {k: v for k, v in self._validators.items() if not k[0].startswith(prefix)}
            self._listings[server] = listing
            return listing.tools

    async def tools(self, allow: Allowlist | None = None) -> list[ToolInfo]:
        """Every tool of every server the allowlist can reach (all servers when None)."""
        servers = [s for s in self.server_names if allow is None or allow.may_touch_server(s)]
        listings = await asyncio.gather(*(self.server_tools(s) for s in servers))
        found = [info for listing in listings for info in listing.values()]
        return [info for info in found if allow is None or allow.allows(info.name)]

    async def approve(self, server: str, tool: str | None = None) -> list[str]:
        """Re-pin a server's current tool definitions (all, or one); returns the tools approved."""
        conn = self.connection(server)
        tools = await conn.list_tools()
        if tool is not None and tool not in {t.name for t in tools}:
            raise UnknownTool(f"MCP server {server!r} has no tool {tool!r}")
        approved = self.pins.approve(server, tools, only=tool)
        self._listings.pop(server, None)
        return approved

    def view(self, patterns: Iterable[str] | Allowlist) -> ToolView:
        allow = patterns if isinstance(patterns, Allowlist) else Allowlist.of(patterns)
        return ToolView(self, allow)

    async def call(
        self,
        name: str,
        arguments: Mapping[str, Any] | None,
        *,
        allow: Allowlist | None = None,
        timeout_s: float | None = None,
        call_id: str | None = None,
        call_index: int | str = 0,
    ) -> ToolResult:
        """Call `server.tool`. Raises a ToolError subclass when refused or when the call fails;
        a tool that *ran* and reported failure comes back as `ToolResult(is_error=True)`.
        `call_id` is the model's id for this call, when it gave one (`gen_ai.tool.call.id`).
        `call_index` numbers the caller's calls within its step (part of the idempotency key)."""
        args = dict(arguments or {})
        scope = current_scope()
        key = idempotency_key(name, args, call_index, scope)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": name,
            "gen_ai.tool.type": "extension",  # spec: a tool the agent side runs against an external API
            "mcp.method.name": "tools/call",
        }
        if call_id:
            attributes["gen_ai.tool.call.id"] = call_id
        attributes[TOOL_IDEMPOTENCY_KEY] = key
        with self._tracer.start_as_current_span(
            f"execute_tool {name}", kind=SpanKind.CLIENT, attributes=attributes, record_exception=False, set_status_on_exception=False
        ) as span:
            try:
                info = await self._admit(name, args, allow, span)
                started = time.perf_counter()
                journal = self.journal if scope is not None and not info.read_only else None
                recorded = await self._before_send(journal, info, key, scope, span) if journal is not None else None
                if recorded is not None:
                    raw, replayed = recorded, True
                else:
                    conn = self._connections[info.server]
                    meta = {IDEMPOTENCY_META_KEY: key}
                    raw = await conn.call_tool(info.tool.name, args, timeout_s=timeout_s, retry_safe=info.retry_safe, meta=meta)
                    replayed = False
                    if journal is not None:
                        dumped = raw.model_dump(by_alias=True, mode="json", exclude_none=True)
                        await asyncio.to_thread(journal.finish, key, dumped, is_error=bool(raw.is_error))
                result = _to_result(name, args, raw, (time.perf_counter() - started) * 1000, key=key, replayed=replayed)
            except ToolError as exc:
                span.set_attribute("error.type", exc.code)
                span.set_status(StatusCode.ERROR, exc.message)
                raise
            except BaseException as exc:  # cancellation or a bug: still close the span as failed
                span.set_attribute("error.type", type(exc).__name__)
                span.set_status(StatusCode.ERROR, type(exc).__name__)
                raise
            if result.is_error:
                span.set_attribute("error.type", "tool_error")  # the MCP conventions' value for isError results
                span.set_status(StatusCode.ERROR, result.text[:200])
            return result

    async def _before_send(
        self, journal: ToolCallJournal, info: ToolInfo, key: str, scope: CallScope | None, span: Span
    ) -> CallToolResult | None:
        """Consult the journal before a side-effecting call: the recorded result when the call already
        finished, None to send it (journaled as started first), ToolCallUncertain when unsafe."""
        assert scope is not None
        prior = await asyncio.to_thread(journal.get, key)
        if prior is not None and prior.state == "finished" and prior.result is not None:
            span.set_attribute(TOOL_REPLAYED, True)
            from mcp_types import CallToolResult

            return CallToolResult.model_validate(prior.result)
        if prior is not None:  # started, never finished: it may have happened
            if not info.retry_safe:
                raise ToolCallUncertain(
                    f"{info.name} (idempotency key {key}) was sent at {prior.started_at:%Y-%m-%d %H:%M:%S} UTC in step "
                    f"{prior.step!r} and the run stopped before its result was recorded; it may or may not have taken "
                    f"effect, and the tool is not read-only or idempotent and its server does not honour idempotency "
                    f"keys, so it was not sent again. Check {info.server!r} by hand; if it never happened, start the run again"
                )
            span.set_attribute(TOOL_RESENT, True)
        await asyncio.to_thread(journal.start, key, run_id=scope.run_id, step=scope.step, tool=info.name)
        return None

    async def _admit(self, name: str, args: dict[str, Any], allow: Allowlist | None, span: Span) -> ToolInfo:
        def deny(error: ToolError) -> ToolError:
            span.add_event("flotilla.tool.denied", {"flotilla.tool.deny_reason": error.code, "message": error.message})
            return error

        server, dot, tool = name.partition(".")
        if not dot or not server or not tool:
            raise deny(UnknownTool(f"tool names are `server.tool`; got {name!r}"))
        if allow is not None and not allow.allows(name):
            raise deny(ToolNotAllowed(f"{name} is not in this agent's `tools:` allowlist ({', '.join(allow.patterns) or 'empty'})"))
        if server not in self._connections:
            raise deny(UnknownTool(f"no MCP server named {server!r} in flotilla.yaml `mcp_servers:`"))
        span.set_attributes({"flotilla.tool.server": server, **_transport_attributes(self._connections[server].config)})
        info = (await self.server_tools(server)).get(tool)
        if info is None:
            raise deny(UnknownTool(f"MCP server {server!r} has no tool {tool!r}"))
        span.set_attribute("flotilla.tool.pin", info.pin.value)
        if info.blocked:
            why = "changed its description or input schema since it was pinned" if info.pin is PinState.CHANGED else "appeared after the server was pinned"
            raise deny(ToolBlocked(f"{name} {why}; review it, then run `flotilla tools approve {name}`"))
        problems = self._validate(info, args)
        if problems:
            raise deny(ToolArgumentsInvalid(f"arguments for {name} do not match its input schema: {'; '.join(problems)}"))
        return info

    def _validate(self, info: ToolInfo, args: dict[str, Any]) -> list[str]:
        key = (info.name, id(info.tool))
        validator = self._validators.get(key)
        if validator is None:
            schema = info.input_schema or {"type": "object"}
            cls = validators.validator_for(schema)
            try:
                cls.check_schema(schema)
            except SchemaError:
                return []  # an invalid schema from the server cannot be enforced; the server still validates
            validator = cls(schema)
            self._validators[key] = validator
        if validator.is_valid(args):  # the common case, and much cheaper than collecting errors
            return []
        errors = sorted(validator.iter_errors(args), key=lambda e: list(e.absolute_path))
        shown = [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors[:_MAX_ERRORS_SHOWN]]
        if len(errors) > _MAX_ERRORS_SHOWN:
            shown.append(f"… {len(errors) - _MAX_ERRORS_SHOWN} more")
        return shown

    async def aclose(self) -> None:
        await asyncio.gather(*(conn.aclose() for conn in self._connections.values()))

    async def __aenter__(self) -> ToolHub:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


@dataclass(frozen=True, slots=True)
class ToolView:
    """What one agent sees: the hub filtered by its allowlist. Blocked tools are listed by
    `tools()` with their pin state but left out of `usable()`; calling one raises ToolBlocked."""

    hub: ToolHub
    allow: Allowlist

    async def tools(self) -> list[ToolInfo]:
        return await self.hub.tools(self.allow)

    async def usable(self) -> list[ToolInfo]:
        return [info for info in await self.tools() if not info.blocked]

    async def call(
        self,
        name: str,
        arguments: Mapping[str, Any] | None,
        *,
        timeout_s: float | None = None,
        call_id: str | None = None,
        call_index: int | str = 0,
    ) -> ToolResult:
        return await self.hub.call(name, arguments, allow=self.allow, timeout_s=timeout_s, call_id=call_id, call_index=call_index)


def _transport_attributes(config: McpServerConfig) -> dict[str, Any]:
    """Where the call goes, in the MCP conventions' terms (model/mcp/common.yaml)."""
    if not isinstance(config, HttpServerConfig):
        return {"network.transport": "pipe"}
    url = urlsplit(config.url)
    attrs: dict[str, Any] = {"network.transport": "tcp", "network.protocol.name": "http"}
    if url.hostname:
        attrs["server.address"] = url.hostname
        attrs["server.port"] = url.port or (443 if url.scheme == "https" else 80)
    return attrs


def _to_result(
    name: str, args: dict[str, Any], raw: CallToolResult, latency_ms: float, *, key: str | None = None, replayed: bool = False
) -> ToolResult:
    from mcp_types import TextContent  # loaded already: a result came from a connection or the journal

    parts: list[str] = []
    for block in raw.content:
        if isinstance(block, TextContent):
            parts.append(block.text)
        else:
            mime = getattr(block, "mime_type", None) or getattr(block, "type", "content")
            uri = getattr(getattr(block, "resource", None), "uri", None) or getattr(block, "uri", None)
            parts.append(f"[{mime}{' ' + str(uri) if uri else ''}]")
    return ToolResult(
        name=name,
        arguments=args,
        is_error=bool(raw.is_error),
        text="\n".join(parts),
        structured=raw.structured_content,
        latency_ms=latency_ms,
        idempotency_key=key,
        replayed=replayed,
    )
