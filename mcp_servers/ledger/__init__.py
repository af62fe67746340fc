"""The bundled `ledger` MCP server (run it: `python -m flotilla.mcp_servers.ledger [--db PATH]`)."""

from flotilla.mcp_servers.ledger.db import build_database
from flotilla.mcp_servers.ledger.server import build_server

__all__ = ["build_server", "build_database"]
