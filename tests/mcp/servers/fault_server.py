"""A small stdio MCP server with tools that misbehave on purpose, for the pool's fault tests.

FAULT_DESCRIPTION (env) sets the `echo` tool's description, so a test can change it between
runs (a "rug pull"). FAULT_CALL_LOG (env) names a file that gets one line per tool call the
server actually executes, so a test can prove a call never reached the server.
"""

from __future__ import annotations

import os
import sys

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations

server = MCPServer(name="fault", log_level="WARNING")
_log = os.environ.get("FAULT_CALL_LOG")


def _record(tool: str) -> None:
    if _log:
        with open(_log, "a", encoding="utf-8") as fh:
            fh.write(f"{tool}\n")


@server.tool(description=os.environ.get("FAULT_DESCRIPTION", "Echo the text back."))
def echo(text: str, times: int = 1) -> str:
    _record("echo")
    return " ".join([text] * times)


@server.tool()
def pid() -> int:
    """This server's process id."""
    return os.getpid()


@server.tool()
def fail(reason: str) -> str:
    """Always reports failure (an isError result)."""
    _record("fail")
    raise ToolError(f"failed on purpose: {reason}")


@server.tool()
async def hang() -> str:
    """Never answers."""
    _record("hang")
    await anyio.sleep_forever()
    return "unreachable"


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
async def slow_read(seconds: float) -> str:
    """Read-only, slow: safe to repeat."""
    _record("slow_read")
    await anyio.sleep(seconds)
    return f"read after {seconds}s"


@server.tool(annotations=ToolAnnotations(read_only_hint=False, idempotent_hint=False, destructive_hint=True))
async def slow_write(seconds: float) -> str:
    """Changes state, slow: not safe to repeat."""
    _record("slow_write")
    await anyio.sleep(seconds)
    return f"wrote after {seconds}s"


if __name__ == "__main__":
    print(f"fault server pid {os.getpid()}", file=sys.stderr)
    server.run("stdio")
