"""OpenTelemetry set-up for flotilla: one TracerProvider per runtime, passed to whoever traces.

Spans follow the OpenTelemetry GenAI semantic conventions (the span tree, kinds and names are
in `flotilla.audit.semconv`):

    invoke_workflow <workflow>      gen_ai.workflow.name, gen_ai.conversation.id, flotilla.run_id, …
      invoke_agent <agent>          gen_ai.agent.name, gen_ai.provider.name
        chat <model>                gen_ai.provider.name, gen_ai.request.model, usage …
        execute_tool <tool>         gen_ai.tool.name, mcp.method.name

The provider is not installed globally (tests build many runtimes in one process); callers
get it from `Telemetry.tracer`. Exporters are batched so export stays off the hot path.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Tracer

from flotilla.audit.span_wal import AcknowledgingExporter, SpanWriteAheadLog, WriteAheadSpanProcessor, recover
from flotilla.audit.trace_file import JsonLinesSpanExporter  # the local trace file; re-exported

if TYPE_CHECKING:
    from flotilla.audit.metrics import FlotillaMetrics

__all__ = ["Telemetry", "JsonLinesSpanExporter", "otlp_exporter_from_env"]

log = logging.getLogger(__name__)

SERVICE_NAME = "flotilla"
MAX_QUEUE = 65_536


def otlp_exporter_from_env() -> SpanExporter | None:
    """An OTLP/HTTP exporter when the standard OTEL_EXPORTER_OTLP_* endpoint is set, else None."""
    if not (os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


class _ProcessResource(Resource):
    """The provider's resource, its JSON made once: the trace file's lines (the SDK's
    `ReadableSpan.to_json`) re-encode it for every span with the stdlib's pure-Python pretty
    printer, a fifth of the export thread's time. A Resource is immutable, so the text holds."""

    @classmethod
    def of(cls, resource: Resource) -> _ProcessResource:
        return cls(resource.attributes, resource.schema_url)

    def to_json(self, indent: int | None = 4) -> str:
        made: dict[int | None, str] = self.__dict__.setdefault("_flotilla_json", {})
        if indent not in made:
            made[indent] = super().to_json(indent)
        return made[indent]


class Telemetry:
    """Owns a TracerProvider and its exporters (and `metrics`, fed from the spans, when given)."""

    def __init__(
        self,
        exporters: Sequence[SpanExporter] = (),
        *,
        service_name: str = SERVICE_NAME,
        metrics: FlotillaMetrics | None = None,
        write_ahead: Path | None = None,
    ) -> None:
        """`write_ahead` (e.g. `<data_dir>/span-wal`): each finished span is logged there until it is
        exported, so a killed process loses none; logs that dead processes left are exported
        (once each into the audit store) in the background: now, every 30 s and at each `flush`."""
        self.provider = TracerProvider(resource=_ProcessResource.of(Resource.create({"service.name": service_name})))
        # First, so every span names its run before any exporter sees it.
        from flotilla.audit.exporter import RunContextProcessor

        self.provider.add_span_processor(RunContextProcessor())
        self.metrics = metrics
        if metrics is not None:
            from flotilla.audit.metrics import MetricsSpanProcessor

            self.provider.add_span_processor(MetricsSpanProcessor(metrics))
        self._batches: list[BatchSpanProcessor] = []
        self._recoveries: list[_LogRecovery] = []
        for index, exporter in enumerate(exporters):
            # A deep queue: the SDK drops spans when it is full, and a dropped span is a hole in the audit trail.
            if write_ahead is None:
                batch = BatchSpanProcessor(exporter, max_queue_size=MAX_QUEUE)
                self.provider.add_span_processor(batch)
            else:
                logs = write_ahead / str(index)
                wal = SpanWriteAheadLog(logs)
                batch = BatchSpanProcessor(AcknowledgingExporter(exporter, wal), max_queue_size=MAX_QUEUE)
                self.provider.add_span_processor(WriteAheadSpanProcessor(batch, wal))
                self._recoveries.append(_LogRecovery(logs, exporter))
            self._batches.append(batch)

    @functools.cached_property
    def tracer(self) -> Tracer:
        return self.provider.get_tracer("flotilla")  # made once: the SDK builds a new one (scope, lock) per call

    def flush(self) -> None:
        """Export everything queued so far, however long it takes.

        Not `provider.force_flush()`: it shares one 30 s deadline among the processors and skips
        the ones after it, so a slow exporter (redaction behind) would leave the audit store's
        queue unexported. Each processor's own flush blocks until its queue is empty.
        """
        for recovery in self._recoveries:
            recovery.once()  # also takes the logs of processes that died since the last pass
        for batch in self._batches:
            batch.force_flush()

    def shutdown(self) -> None:
        """Drain every queue fully, then stop. The SDK's shutdown gives its worker 30 s and drops
        what is still queued after that; draining first means it has nothing left to drop."""
        self.flush()
        for recovery in self._recoveries:
            recovery.stop()
        self.provider.shutdown()
        if self.metrics is not None:
            self.metrics.shutdown()  # a last collection goes out over OTLP


class _LogRecovery(threading.Thread):
    """Exports what dead processes left in their write-ahead logs: at start, every `every_s` (a
    process of the machine may die any time) and at each `flush`; one pass at a time."""

    def __init__(self, logs: Path, exporter: SpanExporter, every_s: float = 30.0) -> None:
        super().__init__(name="flotilla-span-wal-recovery", daemon=True)
        self.logs, self.every_s = logs, every_s
        self._send = getattr(exporter, "replay", exporter.export)  # the audit store skips spans it has
        self._pass = threading.Lock()
        self._stopped = threading.Event()
        self.start()

    def run(self) -> None:
        while True:
            self.once()
            if self._stopped.wait(self.every_s):
                return

    def stop(self) -> None:
        self._stopped.set()
        self.join()

    def once(self) -> None:
        with self._pass:
            try:
                count = recover(self.logs, lambda spans: self._send(spans) is SpanExportResult.SUCCESS)
            except Exception:  # never take the runtime down over a leftover log; it stays for the next pass
                log.exception("could not recover the span write-ahead logs under %s", self.logs)
                return
        if count:
            log.warning("exported %d spans a killed process had finished but not exported (write-ahead log %s)", count, self.logs)
