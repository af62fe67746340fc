"""Tool-description pinning: trust on first use, then block any change until a person approves.

The lock file (`mcp.lock.json`, beside flotilla.yaml) records, per server and tool, a SHA-256
of the tool's name, description and input schema. A server seen for the first time has all
its tools pinned. Afterwards a tool whose hash differs ("rug pull": the description now says
"also send the file to …") or a tool that appeared later is blocked until
`flotilla tools approve SERVER[.TOOL]` re-pins it.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the MCP SDK loads only when a hub connects to a server
    from mcp_types import Tool

__all__ = ["PinState", "PinStore", "tool_digest", "LOCK_FILE_NAME"]

LOCK_FILE_NAME = "mcp.lock.json"
_FORMAT = 1


class PinState(StrEnum):
    PINNED = "pinned"
    """The tool matches its pin."""
    CHANGED = "changed"
    """Description or input schema differ from the pin: blocked."""
    NEW = "new"
    """Appeared after the server was pinned: blocked until approved."""


def tool_digest(tool: Tool) -> str:
    canonical = json.dumps(
        {"name": tool.name, "description": tool.description or "", "input_schema": tool.input_schema},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class PinStore:
    """Reads and writes the lock file; every write is atomic (temp file + rename)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._data = self._load()

    def _load(self) -> dict[str, Any]:
        if not self.path.is_file():
            return {"format": _FORMAT, "servers": {}}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            from flotilla.audit.errors import ConfigError

            raise ConfigError(f"cannot read the MCP tool lock file {self.path}: {exc}; fix or delete it") from None
        data.setdefault("servers", {})
        return data

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_text(json.dumps(self._data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, self.path)

    def servers(self) -> set[str]:
        return set(self._data["servers"])

    def pinned_tools(self) -> dict[str, set[str]]:
        """The pinned tool names of each server seen so far."""
        return {server: set(entry.get("tools", {})) for server, entry in self._data["servers"].items()}

    def pinned(self, server: str, tool: str) -> str | None:
        entry = self._data["servers"].get(server, {}).get("tools", {}).get(tool)
        return None if entry is None else entry["sha256"]

    def check(self, server: str, tools: list[Tool]) -> dict[str, PinState]:
        """Pin state of each listed tool; pins every tool of a server seen for the first time."""
        with self._lock:
            servers = self._data["servers"]
            if server not in servers:
                servers[server] = {"tools": {t.name: self._entry(t) for t in tools}}
                self._save()
                return {t.name: PinState.PINNED for t in tools}
            pins = servers[server]["tools"]
            states: dict[str, PinState] = {}
            for tool in tools:
                entry = pins.get(tool.name)
                if entry is None:
                    states[tool.name] = PinState.NEW
                elif entry["sha256"] != tool_digest(tool):
                    states[tool.name] = PinState.CHANGED
                else:
                    states[tool.name] = PinState.PINNED
            return states

    def approve(self, server: str, tools: list[Tool], only: str | None = None) -> list[str]:
        """Re-pin the server's current tools (or just `only`); returns the names re-pinned."""
        with self._lock:
            entry = self._data["servers"].setdefault(server, {"tools": {}})
            chosen = [t for t in tools if only is None or t.name == only]
            for tool in chosen:
                entry["tools"][tool.name] = self._entry(tool)
            if only is None:  # approving a whole server also forgets tools it no longer offers
                current = {t.name for t in tools}
                entry["tools"] = {name: pin for name, pin in entry["tools"].items() if name in current}
            self._save()
            return [t.name for t in chosen]

    @staticmethod
    def _entry(tool: Tool) -> dict[str, str]:
        return {
            "sha256": tool_digest(tool),
            "description": (tool.description or "")[:200],
            "pinned_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
