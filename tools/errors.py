"""Typed errors of the MCP client side. Each says what to fix; each has a stable `code`."""

from __future__ import annotations

from flotilla.audit.errors import FlotillaError

__all__ = [
    "ToolError",
    "UnknownTool",
    "ToolNotAllowed",
    "ToolBlocked",
    "ToolArgumentsInvalid",
    "ToolTimeout",
    "ToolServerUnavailable",
    "ToolConnectionLost",
    "ToolProtocolError",
    "ToolCallUncertain",
]


class ToolError(FlotillaError):
    """A tool could not be listed or called."""

    code = "tool_error"


class UnknownTool(ToolError):
    """The name is not `server.tool`, or that server does not offer that tool."""

    code = "tool_unknown"


class ToolNotAllowed(ToolError):
    """The agent's `tools:` allowlist does not cover this tool."""

    code = "tool_not_allowed"


class ToolBlocked(ToolError):
    """The tool's description or schema differs from its pin (or it appeared after pinning)."""

    code = "tool_blocked"


class ToolArgumentsInvalid(ToolError):
    """The arguments do not match the tool's input schema; the call was not sent."""

    code = "tool_arguments_invalid"


class ToolTimeout(ToolError):
    """The server did not answer (or connect) within the timeout."""

    code = "tool_timeout"


class ToolServerUnavailable(ToolError):
    """The server could not be started or reached."""

    code = "tool_server_unavailable"


class ToolConnectionLost(ToolError):
    """The connection dropped while a call that is not safe to repeat was in flight."""

    code = "tool_connection_lost"


class ToolProtocolError(ToolError):
    """The server answered with a JSON-RPC error instead of a result."""

    code = "tool_protocol_error"


class ToolCallUncertain(ToolError):
    """A side-effecting call was sent before an interruption and has no recorded result; the
    tool is neither read-only nor idempotent and its server does not honour idempotency keys,
    so sending it again could act twice. A person must check (the run ends `needs_review`)."""

    code = "tool_call_uncertain"
