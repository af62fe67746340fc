"""The local trace file (`<data_dir>/traces.jsonl`): one sanitized span per JSON line, bounded.

It rotates by size with the stdlib's `RotatingFileHandler` (traces.jsonl → .1 → … → .N, the
oldest dropped), and `audit prune` trims every file of it by date (`prune_trace_files`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from logging.handlers import RotatingFileHandler
from pathlib import Path

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

__all__ = ["JsonLinesSpanExporter", "TracePruneReport", "prune_trace_files", "trace_files"]


class JsonLinesSpanExporter(SpanExporter):
    """Appends each finished span as one JSON line; rotates at `max_bytes` (0: never) keeping `backups` old files."""

    def __init__(self, path: Path, *, max_bytes: int = 0, backups: int = 3) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # Rotation needs somewhere to rotate to: with no backups the handler would never roll over.
        self._handler = RotatingFileHandler(path, maxBytes=max_bytes if backups else 0, backupCount=backups, encoding="utf-8", delay=True)
        self._handler.setFormatter(logging.Formatter("%(message)s"))

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if spans:
            # One record per batch: one write, one flush, one size check (a file may pass the cap by one batch).
            lines = "\n".join(span.to_json(indent=None) for span in spans)
            self._handler.handle(logging.makeLogRecord({"msg": lines}))
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self._handler.close()


@dataclass(frozen=True, slots=True)
class TracePruneReport:
    lines: int
    """Span lines removed (unreadable lines count: nothing proves they are newer)."""
    files: int
    """Rotated files deleted whole."""


def trace_files(path: Path) -> list[Path]:
    """The trace file and its rotated copies (traces.jsonl.1 …), newest first."""
    rotated = [p for p in path.parent.glob(f"{path.name}.*") if p.suffix[1:].isdigit()]
    return [p for p in (path, *sorted(rotated, key=lambda p: int(p.suffix[1:]))) if p.is_file()]


def prune_trace_files(path: Path, before: datetime) -> TracePruneReport:
    """Remove every span that ended before `before` from the trace file and its rotated copies."""
    moment = before.replace(tzinfo=UTC) if before.tzinfo is None else before.astimezone(UTC)
    cutoff = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # the SDK's own span time format, so text order is time order
    lines = files = 0
    for file in trace_files(path):
        kept, dropped = [], 0
        with file.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if _ended(line) >= cutoff:
                    kept.append(line)
                else:
                    dropped += 1
        if not dropped:
            continue
        lines += dropped
        if kept or file == path:
            # Rewritten in place (same inode), so a running process's append handle stays valid.
            with file.open("r+", encoding="utf-8") as fh:
                fh.write("".join(kept))
                fh.truncate()
        else:
            file.unlink()
            files += 1
    return TracePruneReport(lines, files)


def _ended(line: str) -> str:
    try:
        return str(json.loads(line).get("end_time") or "")
    except (ValueError, AttributeError):
        return ""
