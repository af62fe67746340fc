"""Span exporters: into the audit store, and a sanitizing wrapper for OTLP (or any exporter).

Both run inside a BatchSpanProcessor's worker thread, so the agent step never waits on the
database or the network. Every span goes through the same `Sanitizer` before it leaves, once:
the runtime hands one `SanitizingExporter` the trace file, the audit store and OTLP, so a batch
is redacted together (one spaCy pass) and the redacted spans are shared by all three.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from opentelemetry.context import Context
from sqlalchemy import Connection, select
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import get_current_span

from flotilla.audit import semconv as sc
from flotilla.audit.sanitize import Sanitizer
from flotilla.audit.spans import prime_content, run_id_of, sanitized_span, span_payload
from flotilla.audit.schema import records as records_table
from flotilla.audit.store import AuditStore, NewRecord, utc_iso
from flotilla.audit.summaries import rail_decisions

__all__ = ["AuditSpanExporter", "SanitizingExporter", "RunContextProcessor", "prune_spool"]

log = logging.getLogger(__name__)

_INHERITED = (sc.RUN_ID, sc.WORKFLOW, sc.CONVERSATION_ID)


class RunContextProcessor(SpanProcessor):
    """Copies `flotilla.run_id` (workflow, `gen_ai.conversation.id`) from the parent span onto each new child span.

    Children finish (and are exported) before the root workflow span, so each span must name
    its run itself. Added first by `Telemetry`; costs one dict lookup per span.
    """

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        parent = get_current_span(parent_context)
        attrs = getattr(parent, "attributes", None)
        if not attrs:
            return
        own = span.attributes or {}
        for key in _INHERITED:
            if key not in own and key in attrs:
                span.set_attribute(key, attrs[key])


class AuditSpanExporter(SpanExporter):
    """Writes each batch of finished spans (plus one `rail` record per rail decision) to the store."""

    def __init__(self, store: AuditStore, sanitizer: Sanitizer | None = None, *, spool: Path | None = None) -> None:
        self.store = store
        self.sanitizer = sanitizer or Sanitizer()
        self.spool = spool
        """When the store cannot be written, sanitized records wait here (JSON lines) and go in first next time."""
        self._lock = threading.Lock()
        # trace → run, for spans of a run that arrive without the attribute
        self._runs: OrderedDict[str, str] = OrderedDict()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            try:
                new = self.records(spans)
            except Exception:  # the exporter must never raise into the SDK
                log.exception("audit export: could not convert %d spans", len(spans))
                return SpanExportResult.FAILURE
            waiting = self._read_spool()
            try:
                self.store.append(waiting + new)
            except Exception as exc:
                if self.spool is None:
                    log.error("audit export of %d spans failed (no spool configured, they are lost): %s", len(spans), exc)
                    return SpanExportResult.FAILURE
                self._write_spool(new)
                log.error("audit store unavailable, %d records spooled to %s: %s", len(new), self.spool, exc)
                return SpanExportResult.FAILURE
            if waiting:
                self.spool.unlink(missing_ok=True)  # type: ignore[union-attr]
            return SpanExportResult.SUCCESS

    def replay(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Spans recovered from a dead process's write-ahead log (audit/span_wal.py): appended unless
        the store has them already (the process may have died between export and acknowledgement)."""
        with self._lock:
            new = self.records(spans)
            runs = {rec.run_id for rec in new}

            def missing(conn: Connection) -> list[NewRecord]:
                stored = _stored_span_ids(conn, runs, {rec.payload["span_id"] for rec in new})
                return [rec for rec in new if rec.payload["span_id"] not in stored]

            try:
                self.store.append_missing(missing)
            except Exception as exc:
                log.error("audit store unavailable, %d recovered spans kept in the write-ahead log: %s", len(spans), exc)
                return SpanExportResult.FAILURE
            return SpanExportResult.SUCCESS

    def _read_spool(self) -> list[NewRecord]:
        if self.spool is None or not self.spool.is_file():
            return []
        out = []
        for line in self.spool.read_text(encoding="utf-8").splitlines():
            if line.strip():
                item = json.loads(line)
                out.append(NewRecord(item["kind"], item["payload"], item.get("run_id")))
        return out

    def _write_spool(self, new: list[NewRecord]) -> None:
        assert self.spool is not None
        self.spool.parent.mkdir(parents=True, exist_ok=True)
        spooled_at = utc_iso()  # retention trims the spool by this, as it does the store by recorded_at
        with self.spool.open("a", encoding="utf-8") as fh:
            for rec in new:
                line = {"kind": rec.kind, "payload": rec.payload, "run_id": rec.run_id, "spooled_at": spooled_at}
                fh.write(json.dumps(line, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def records(self, spans: Sequence[ReadableSpan]) -> list[NewRecord]:
        prime_content(spans, self.sanitizer)
        for span in spans:
            run_id = run_id_of(span)
            if run_id and span.context is not None:
                self._remember(span.context.trace_id, run_id)
        out: list[NewRecord] = []
        for span in spans:
            run_id = run_id_of(span)
            if run_id is None and span.context is not None:
                run_id = self._runs.get(format(span.context.trace_id, "032x"))
            payload = span_payload(span, self.sanitizer)
            out.append(NewRecord("span", payload, run_id))
            for decision in rail_decisions(payload):
                out.append(NewRecord("rail", {"span_id": payload["span_id"], "span": payload["name"], **decision}, run_id))
        return out

    def _remember(self, trace_id: int, run_id: str) -> None:
        key = format(trace_id, "032x")
        self._runs[key] = run_id
        self._runs.move_to_end(key)
        while len(self._runs) > 4096:
            self._runs.popitem(last=False)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def _stored_span_ids(conn: Connection, runs: set[str | None], wanted: set[str]) -> set[str]:
    """Which of `wanted` span ids the store already holds as `span` records of these runs."""
    kind_span = records_table.c.kind == "span"
    found: set[str] = set()
    run_ids = [r for r in runs if r is not None]
    if run_ids:
        rows = conn.execute(select(records_table.c.payload).where(kind_span, records_table.c.run_id.in_(run_ids)))
        found |= {json.loads(payload).get("span_id") for (payload,) in rows}
    if None in runs:  # spans outside any run: look them up one by one
        for span_id in wanted - found:
            like = records_table.c.payload.like(f'%"span_id":"{span_id}"%')
            if conn.execute(select(records_table.c.seq).where(kind_span, records_table.c.run_id.is_(None), like).limit(1)).first():
                found.add(span_id)
    return found & wanted


def prune_spool(spool: Path, before: datetime) -> int:
    """Drop spooled records written before `before` (as `audit prune` drops them from the store); returns how many."""
    if not spool.is_file():
        return 0
    cutoff = utc_iso(before)
    lines = [line for line in spool.read_text(encoding="utf-8").splitlines() if line.strip()]
    kept = [line for line in lines if _spooled_at(line) >= cutoff]
    if len(kept) < len(lines):
        if kept:
            spool.write_text("\n".join(kept) + "\n", encoding="utf-8")
        else:
            spool.unlink()
    return len(lines) - len(kept)


def _spooled_at(line: str) -> str:
    try:
        return str(json.loads(line).get("spooled_at") or "")  # older spools have none: nothing proves them newer
    except (ValueError, AttributeError):
        return ""


class SanitizingExporter(SpanExporter):
    """Wraps exporters (trace file, audit store, OTLP) so they only ever see sanitized spans,
    sanitized once per batch and shared. An `AuditSpanExporter` among them should be given
    `sanitizer.passthrough()`, so it does not redact the redacted text again."""

    def __init__(self, inner: SpanExporter | Sequence[SpanExporter], sanitizer: Sanitizer) -> None:
        self.inners = [inner] if isinstance(inner, SpanExporter) else list(inner)
        self.sanitizer = sanitizer

    @property
    def inner(self) -> SpanExporter:
        return self.inners[0]

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._export(spans, replay=False)

    def replay(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Spans recovered from a dead process's write-ahead log: exporters that can tell what
        they have already (the audit store) skip those; the others get them (again, at worst)."""
        return self._export(spans, replay=True)

    def _export(self, spans: Sequence[ReadableSpan], *, replay: bool) -> SpanExportResult:
        try:
            prime_content(spans, self.sanitizer)
            clean = [sanitized_span(s, self.sanitizer) for s in spans]
        except Exception:  # the exporter must never raise into the SDK
            log.exception("could not sanitize %d spans", len(spans))
            return SpanExportResult.FAILURE
        result = SpanExportResult.SUCCESS
        for exporter in self.inners:
            send = exporter.replay if replay and hasattr(exporter, "replay") else exporter.export
            try:
                if send(clean) is not SpanExportResult.SUCCESS:
                    result = SpanExportResult.FAILURE
            except Exception:  # one exporter failing must not starve the others
                log.exception("%s failed to export %d spans", type(exporter).__name__, len(clean))
                result = SpanExportResult.FAILURE
        return result

    def shutdown(self) -> None:
        for exporter in self.inners:
            exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return all([exporter.force_flush(timeout_millis) for exporter in self.inners])
