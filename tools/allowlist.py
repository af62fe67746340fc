"""Per-agent tool allowlists: `server.tool` patterns with shell-style globs.

    tools: [ledger.*, documents.search_documents, "fs.read_*"]

A pattern without a dot names a whole server (`ledger` = `ledger.*`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase

__all__ = ["Allowlist"]


@dataclass(frozen=True, slots=True)
class Allowlist:
    patterns: tuple[str, ...]

    @classmethod
    def of(cls, patterns: Iterable[str] | None) -> Allowlist:
        normalised = []
        for pattern in patterns or ():
            pattern = pattern.strip()
            if pattern:
                normalised.append(pattern if "." in pattern or pattern == "*" else f"{pattern}.*")
        return cls(tuple(normalised))

    def allows(self, qualified_name: str) -> bool:
        return any(fnmatchcase(qualified_name, p) for p in self.patterns)

    def unmatched(self, servers: Iterable[str]) -> list[str]:
        """Patterns that can match no configured server: typos `flotilla validate` should report."""
        names = list(servers)
        return [p for p in self.patterns if p != "*" and not any(fnmatchcase(s, p.split(".", 1)[0]) for s in names)]

    def may_touch_server(self, server: str) -> bool:
        """Whether any pattern could match a tool of `server` (so we only start servers we need)."""
        return any(p == "*" or fnmatchcase(server, p.split(".", 1)[0]) for p in self.patterns)
