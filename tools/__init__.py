"""MCP client side: pooled sessions, the `server.tool` registry, allowlists and pinning.

    hub = open_hub(settings.mcp_servers, config_file=settings.config_file, tracer=telemetry.tracer)
    view = hub.view(["ledger.*"])          # what one agent may see and call
    result = await view.call("ledger.find_vendor", {"name": "Northwind"})
    await hub.aclose()
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from flotilla.audit.lazy import lazy_exports
from flotilla.tools.allowlist import Allowlist
from flotilla.tools.config import HttpServerConfig, McpServerConfig, StdioServerConfig
from flotilla.tools.errors import (
    ToolArgumentsInvalid,
    ToolBlocked,
    ToolConnectionLost,
    ToolError,
    ToolNotAllowed,
    ToolProtocolError,
    ToolServerUnavailable,
    ToolTimeout,
    UnknownTool,
    ToolCallUncertain,
)
from flotilla.tools.idempotency import IDEMPOTENCY_META_KEY, tool_call_scope

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

    from flotilla.tools.hub import ToolHub, ToolInfo, ToolResult, ToolView
    from flotilla.tools.journal import ToolCallJournal
    from flotilla.tools.pins import LOCK_FILE_NAME, PinState, PinStore

# The hub and pins pull in the MCP SDK: loaded on first use, so reading settings stays cheap.
_WHERE = {
    "ToolHub": "flotilla.tools.hub",
    "ToolInfo": "flotilla.tools.hub",
    "ToolResult": "flotilla.tools.hub",
    "ToolView": "flotilla.tools.hub",
    "ToolCallJournal": "flotilla.tools.journal",
    "LOCK_FILE_NAME": "flotilla.tools.pins",
    "PinState": "flotilla.tools.pins",
    "PinStore": "flotilla.tools.pins",
}


__getattr__ = lazy_exports(__name__, _WHERE)

__all__ = [
    "open_hub",
    "lock_file_for",
    "ToolHub",
    "ToolView",
    "ToolInfo",
    "ToolResult",
    "Allowlist",
    "PinState",
    "PinStore",
    "McpServerConfig",
    "StdioServerConfig",
    "HttpServerConfig",
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
    "ToolCallJournal",
    "IDEMPOTENCY_META_KEY",
    "tool_call_scope",
]


def lock_file_for(config_file: Path | None) -> Path:
    """The pin lock file lives beside flotilla.yaml (or in the working directory without one)."""
    from flotilla.tools.pins import LOCK_FILE_NAME

    return (config_file.parent if config_file is not None else Path.cwd()) / LOCK_FILE_NAME


def open_hub(
    servers: Mapping[str, McpServerConfig],
    *,
    config_file: Path | None = None,
    lock_file: Path | None = None,
    tracer: Tracer | None = None,
    errlog: TextIO | None = None,
    journal: ToolCallJournal | None = None,
) -> ToolHub:
    """A ToolHub over the configured servers. Nothing connects until a tool is first used.
    `journal`: record side-effecting calls of runs (tools/journal.py) so none repeats blindly."""
    from flotilla.tools.hub import ToolHub
    from flotilla.tools.pins import PinStore

    pins = PinStore(lock_file or lock_file_for(config_file))
    return ToolHub(servers, pins=pins, tracer=tracer, errlog=errlog, journal=journal)
