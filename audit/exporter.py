"""Span exporters: into the audit store, and a sanitizing wrapper for OTLP (or any exporter).

Both run inside a BatchSpanProcessor's worker thread, so the agent step never waits on the
database or the network. Every span goes through the same `Sanitizer` before it leaves.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import get_current_span

from audit import semconv as sc
from audit.sanitize import Sanitizer
from audit.spans import run_id_of, sanitized_span, span_payload
from audit.store import AuditStore, NewRecord
from audit.summaries import rail_decisions

__all__ = ["AuditSpanExporter", "SanitizingExporter", "RunContextProcessor"]

log = logging.getLogger(__name__)

_INHERITED = (sc.RUN_ID, sc.WORKFLOW)


class RunContextProcessor(SpanProcessor):
    """Copies `flotilla.run_id` (and workflow) from the parent span onto each new child span.

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

    def __init__(self, store: AuditStore, sanitizer: Sanitizer | None = None) -> None:
        self.store = store
        self.sanitizer = sanitizer or Sanitizer()
        # trace → run, for spans of a run that arrive without the attribute
        self._runs: OrderedDict[str, str] = OrderedDict()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            self.store.append(self.records(spans))
        except Exception:  # the exporter must never raise into the SDK; the failure is logged
            log.exception("audit export of %d spans failed", len(spans))
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def records(self, spans: Sequence[ReadableSpan]) -> list[NewRecord]:
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


class SanitizingExporter(SpanExporter):
    """Wraps an exporter (OTLP) so it only ever sees sanitized spans."""

    def __init__(self, inner: SpanExporter, sanitizer: Sanitizer) -> None:
        self.inner = inner
        self.sanitizer = sanitizer

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.inner.export([sanitized_span(s, self.sanitizer) for s in spans])

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)
