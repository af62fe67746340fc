"""The bundled `documents` MCP server (run it: `python -m flotilla.mcp_servers.documents [--root DIR]`)."""

from flotilla.mcp_servers.documents.server import DEFAULT_ROOT, build_server

__all__ = ["build_server", "DEFAULT_ROOT"]
