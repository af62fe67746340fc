"""The bundled domain servers as `mcp_servers:` entries, configured by default in every runtime.

They start only when an agent's allowlist reaches them, so having them always configured
costs nothing; a flotilla.yaml entry with the same name replaces the default.
"""

from __future__ import annotations

import sys

from flotilla.tools.config import McpServerConfig, StdioServerConfig

__all__ = ["bundled_servers"]


def bundled_servers() -> dict[str, McpServerConfig]:
    # sys.executable: the servers run in this very environment, wherever it is installed.
    return {
        "ledger": StdioServerConfig(command=sys.executable, args=["-m", "flotilla.mcp_servers.ledger"]),
        "documents": StdioServerConfig(command=sys.executable, args=["-m", "flotilla.mcp_servers.documents"]),
    }
