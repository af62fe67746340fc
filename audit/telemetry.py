"""OpenTelemetry set-up for flotilla: one TracerProvider per runtime, passed to whoever traces.

Spans follow the OpenTelemetry GenAI semantic conventions:

    invoke_workflow <workflow>      gen_ai.operation.name=invoke_workflow, flotilla.run_id, …
      invoke_agent <agent>          gen_ai.operation.name=invoke_agent, gen_ai.agent.name
        chat <model>                gen_ai.operation.name=chat, gen_ai.request.model, usage …
        execute_tool <tool>         gen_ai.operation.name=execute_tool, gen_ai.tool.name

The provider is not installed globally (tests build many runtimes in one process); callers
get it from `Telemetry.tracer`. Exporters are batched so export stays off the hot path.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Tracer

__all__ = ["Telemetry", "JsonLinesSpanExporter", "otlp_exporter_from_env"]

SERVICE_NAME = "flotilla"
MAX_QUEUE = 65_536


class JsonLinesSpanExporter(SpanExporter):
    """Appends each finished span as one JSON line to a file (the local trace file)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._file: IO[str] | None = None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            if self._file is None:
                self._file = self.path.open("a", encoding="utf-8")
            for span in spans:
                self._file.write(span.to_json(indent=None) + "\n")
            self._file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def otlp_exporter_from_env() -> SpanExporter | None:
    """An OTLP/HTTP exporter when the standard OTEL_EXPORTER_OTLP_* endpoint is set, else None."""
    if not (os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


class Telemetry:
    """Owns a TracerProvider and its exporters."""

    def __init__(self, exporters: Sequence[SpanExporter] = (), *, service_name: str = SERVICE_NAME) -> None:
        self.provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        # First, so every span names its run before any exporter sees it.
        from flotilla.audit.exporter import RunContextProcessor

        self.provider.add_span_processor(RunContextProcessor())
        for exporter in exporters:
            # A deep queue: the SDK drops spans when it is full, and a dropped span is a hole in the audit trail.
            self.provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=MAX_QUEUE))

    @property
    def tracer(self) -> Tracer:
        return self.provider.get_tracer("flotilla")

    def flush(self) -> None:
        self.provider.force_flush()

    def shutdown(self) -> None:
        self.provider.shutdown()
