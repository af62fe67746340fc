"""The `documents` MCP server: list, search and read the text documents of one folder.

Read-only by construction: the tools only ever resolve names inside the root folder (no
`..`, no symlinks out of it) and only text files (.md, .txt) are offered.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations

__all__ = ["build_server", "DEFAULT_ROOT", "TEXT_SUFFIXES"]

DEFAULT_ROOT = Path(__file__).with_name("corpus")
TEXT_SUFFIXES = (".md", ".txt")
READ_ONLY = ToolAnnotations(read_only_hint=True, idempotent_hint=True, destructive_hint=False, open_world_hint=False)
_WORD = re.compile(r"[a-z0-9][a-z0-9\-]*")
_MAX_READ_CHARS = 20_000


def _documents(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)


def _resolve(root: Path, name: str) -> Path:
    path = (root / name).resolve()
    if not path.is_relative_to(root) or path.suffix.lower() not in TEXT_SUFFIXES or not path.is_file():
        raise ToolError(f"no document named {name!r}; call list_documents for the names")
    return path


def _title(text: str, fallback: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip().lstrip("# ").strip()
    return fallback


def build_server(root: Path = DEFAULT_ROOT) -> MCPServer:
    root = root.resolve()
    if not root.is_dir():
        raise SystemExit(f"documents root {root} is not a directory")
    server = MCPServer(
        name="documents",
        instructions="Search and read the organisation's policy and contract documents.",
        version="0.1.0",
        log_level="WARNING",
    )

    @server.tool(annotations=READ_ONLY)
    def list_documents() -> dict[str, Any]:
        """List every document: its name (use it with read_document), title and size in characters."""
        docs = []
        for path in _documents(root):
            text = path.read_text(encoding="utf-8", errors="replace")
            docs.append({"name": path.relative_to(root).as_posix(), "title": _title(text, path.stem), "chars": len(text)})
        return {"documents": docs, "count": len(docs)}

    @server.tool(annotations=READ_ONLY)
    def search_documents(query: str, limit: int = 5) -> dict[str, Any]:
        """Full-text search: documents ranked by how often the query's words occur, each with the best matching line."""
        terms = set(_WORD.findall(query.lower()))
        if not terms:
            raise ToolError("the query has no words to search for")
        limit = max(1, min(limit, 20))
        hits = []
        for path in _documents(root):
            text = path.read_text(encoding="utf-8", errors="replace")
            words = _WORD.findall(text.lower())
            score = sum(1 for w in words if w in terms)
            if not score:
                continue
            lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
            best = max(lines, key=lambda ln: sum(1 for w in _WORD.findall(ln.lower()) if w in terms))
            hits.append({"name": path.relative_to(root).as_posix(), "title": _title(text, path.stem), "score": score, "snippet": best[:300]})
        hits.sort(key=lambda h: (-h["score"], h["name"]))
        return {"results": hits[:limit], "count": len(hits)}

    @server.tool(annotations=READ_ONLY)
    def read_document(name: str) -> dict[str, Any]:
        """Read one document's full text by name (as given by list_documents or search_documents)."""
        path = _resolve(root, name)
        text = path.read_text(encoding="utf-8", errors="replace")
        truncated = len(text) > _MAX_READ_CHARS
        return {"name": path.relative_to(root).as_posix(), "title": _title(text, path.stem), "text": text[:_MAX_READ_CHARS], "truncated": truncated}

    return server
