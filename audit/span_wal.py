"""A write-ahead log of finished spans, so a killed process loses none of its audit trail.

Export is batched on a background thread (a step never waits on redaction or the database), which
leaves a window: a span that ended but still sits in the exporter's queue dies with the process.
`WriteAheadSpanProcessor` closes it. Each finished span is first appended (one `write` to an
`O_APPEND` file, no Python buffer) to this process's log, then queued for export; each exported
batch appends an acknowledgement, and a fully acknowledged segment is deleted.

    <directory>/<owner>/lock          flock'ed by the owning process while it lives
    <directory>/<owner>/<n>.jsonl     {"seq": …, "span": …} lines and {"ack": seq} lines

A process that dies holds no lock any more: the next one to open the directory (`recover`) takes
its log, hands the unacknowledged spans to `replay`, and deletes it. Guarantee: a process crash
(kill -9) loses no finished span; a power cut loses what the OS had not yet written (no fsync
per span: it would cost milliseconds per step). The log holds span content unredacted, as the
checkpoints hold run state; it lives under the data directory, readable by its owner only, and
only until the span is exported.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

__all__ = ["SpanWriteAheadLog", "WriteAheadSpanProcessor", "AcknowledgingExporter", "recover"]

log = logging.getLogger(__name__)

SEGMENT_SPANS = 5_000
_instances = itertools.count()


class SpanWriteAheadLog:
    """This process's log under `directory`; `append` on span end, `acknowledge` after export."""

    def __init__(self, directory: Path, *, segment_spans: int = SEGMENT_SPANS) -> None:
        self.dir = directory / f"{os.getpid()}-{time.time_ns()}-{next(_instances)}"
        self.dir.mkdir(parents=True, mode=0o700)
        self._lock_fd = os.open(self.dir / "lock", os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)  # held for life: released by the kernel when we die
        self.segment_spans = segment_spans
        self._mutex = threading.Lock()
        self._seq = 0
        self._segments: list[tuple[int, int, int]] = []  # (first seq, fd, last seq), the newest last
        self._acked = 0
        self._pending: dict[int, int] = {}  # span id → seq, until its batch is exported

    def append(self, span: ReadableSpan) -> None:
        body = json.dumps(span_to_json(span), ensure_ascii=False, default=str)  # outside the lock
        with self._mutex:
            self._seq += 1
            if not self._segments or self._segments[-1][2] - self._segments[-1][0] + 1 >= self.segment_spans:
                self._open_segment()
            first, fd, _ = self._segments[-1]
            os.write(fd, f'{{"seq": {self._seq}, "span": {body}}}\n'.encode())
            self._segments[-1] = (first, fd, self._seq)
            if span.context is not None:
                self._pending[span.context.span_id] = self._seq

    def acknowledge(self, spans: Sequence[ReadableSpan]) -> None:
        with self._mutex:
            seqs = [self._pending.pop(s.context.span_id, 0) for s in spans if s.context is not None]
            upto = max(seqs, default=0)
            if upto <= self._acked:
                return
            self._acked = upto
            if self._segments:
                os.write(self._segments[-1][1], f'{{"ack": {upto}}}\n'.encode())
            done = [seg for seg in self._segments if seg[2] <= upto]
            for first, fd, _ in done:
                os.close(fd)
                (self.dir / f"{first}.jsonl").unlink(missing_ok=True)
            self._segments = [seg for seg in self._segments if seg[2] > upto]

    def close(self) -> None:
        """After a full drain: nothing left to replay, so the log goes."""
        with self._mutex:
            for _, fd, _ in self._segments:
                os.close(fd)
            self._segments = []
            if self._seq <= self._acked:
                shutil.rmtree(self.dir, ignore_errors=True)
            os.close(self._lock_fd)

    def _open_segment(self) -> None:
        first = self._seq  # a segment is named after the first seq it holds
        fd = os.open(self.dir / f"{first}.jsonl", os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
        self._segments.append((first, fd, first - 1))


def recover(directory: Path, replay: Callable[[list[ReadableSpan]], bool]) -> int:
    """Replay the unacknowledged spans of every dead process's log under `directory`, then delete
    that log; `replay` returns False to keep it for next time (e.g. the store is down). Returns
    how many spans were replayed. Two processes recovering at once take each log once (the lock)."""
    replayed = 0
    if not directory.is_dir():
        return 0
    for owner in sorted(p for p in directory.iterdir() if p.is_dir()):
        try:
            fd = os.open(owner / "lock", os.O_RDWR)
        except FileNotFoundError:
            continue  # being deleted by whoever recovered it
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its process is alive
            spans = _unacknowledged(owner)
            if spans and not replay(spans):
                continue
            replayed += len(spans)
            shutil.rmtree(owner, ignore_errors=True)
        finally:
            os.close(fd)
    return replayed


def _unacknowledged(owner: Path) -> list[ReadableSpan]:
    entries: list[tuple[int, dict[str, Any]]] = []
    acked = 0
    for segment in sorted(owner.glob("*.jsonl"), key=lambda p: int(p.stem)):
        for line in segment.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                item = json.loads(line)
            except ValueError:
                continue  # the line being written when the process died: its span had not been queued yet
            if "ack" in item:
                acked = max(acked, int(item["ack"]))
            elif "span" in item:
                entries.append((int(item["seq"]), item["span"]))
    return [span_from_json(data) for seq, data in entries if seq > acked]


class WriteAheadSpanProcessor(SpanProcessor):
    """Logs each finished span, then hands it to `inner` (a BatchSpanProcessor over an
    `AcknowledgingExporter` sharing the same log)."""

    def __init__(self, inner: SpanProcessor, wal: SpanWriteAheadLog) -> None:
        self.inner = inner
        self.wal = wal

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.inner.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        try:
            self.wal.append(span)
        except Exception:  # a full disk must not break the run: the span still goes to export
            log.exception("span write-ahead log: could not log span %s", span.name)
        self.inner.on_end(span)

    def shutdown(self) -> None:
        self.inner.shutdown()
        self.wal.close()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


class AcknowledgingExporter(SpanExporter):
    """Exports through `inner`, then acknowledges the batch in the log. Acknowledged whatever the
    result: the log guards against the process dying, the audit spool against the store being down."""

    def __init__(self, inner: SpanExporter, wal: SpanWriteAheadLog) -> None:
        self.inner = inner
        self.wal = wal

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self.inner.export(spans)
        self.wal.acknowledge(spans)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


def span_to_json(span: ReadableSpan) -> dict[str, Any]:
    ctx, parent = span.context, span.parent
    return {
        "name": span.name,
        "ctx": [ctx.trace_id, ctx.span_id, int(ctx.trace_flags)] if ctx else None,
        "parent": [parent.trace_id, parent.span_id, parent.is_remote] if parent else None,
        "kind": span.kind.value,
        "status": [span.status.status_code.value, span.status.description],
        "start": span.start_time,
        "end": span.end_time,
        "attrs": dict(span.attributes or {}),
        "events": [[e.name, e.timestamp, dict(e.attributes or {})] for e in span.events],
        "links": [[link.context.trace_id, link.context.span_id, dict(link.attributes or {})] for link in span.links],
        "resource": dict(span.resource.attributes) if span.resource else {},
        "scope": [span.instrumentation_scope.name, span.instrumentation_scope.version] if span.instrumentation_scope else None,
    }


def span_from_json(data: dict[str, Any]) -> ReadableSpan:
    trace_id, span_id, flags = data["ctx"] or (0, 0, 1)
    parent = data.get("parent")
    scope = data.get("scope")
    return ReadableSpan(
        name=data["name"],
        context=SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(flags)),
        parent=SpanContext(parent[0], parent[1], is_remote=bool(parent[2])) if parent else None,
        resource=Resource(_attrs(data.get("resource") or {})),
        attributes=_attrs(data.get("attrs") or {}),
        events=[Event(name, _attrs(attrs), timestamp) for name, timestamp, attrs in data.get("events") or []],
        links=[Link(SpanContext(t, s, is_remote=True), _attrs(attrs)) for t, s, attrs in data.get("links") or []],
        kind=SpanKind(data.get("kind", SpanKind.INTERNAL.value)),
        status=Status(StatusCode(data["status"][0]), data["status"][1]),
        start_time=data.get("start"),
        end_time=data.get("end"),
        instrumentation_scope=InstrumentationScope(scope[0], scope[1]) if scope else None,
    )


def _attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """JSON turned the attributes' tuples into lists; OTel attribute values are tuples."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in attrs.items()}
