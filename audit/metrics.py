"""Live per-specialist metrics: OpenTelemetry instruments fed from the spans flotilla already records.

A span processor hands each finished span over: a `chat` span is one GenAI client operation
(`gen_ai.client.operation.duration`, `gen_ai.client.token.usage`, per the GenAI semantic
conventions, docs/gen-ai/gen-ai-metrics.md), an `invoke_agent` span is one specialist step
(flotilla's counters, from the `flotilla.step.*` attributes `Agent.run` sets). So the live
figures and `flotilla stats` (audit/stats.py, from the same spans in the audit store) agree.

Every series is labelled by workflow, agent, model alias and model version (the LoRA adapter
when the alias uses one, else the model name). Readers: Prometheus text at `/metrics` on
`flotilla serve` (a per-runtime prometheus-client registry), and OTLP/HTTP to the endpoint the
traces go to (`OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`).
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from opentelemetry.metrics import CallbackOptions, Counter, Observation
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.trace import StatusCode

from flotilla.audit import semconv as sc

__all__ = ["FlotillaMetrics", "MetricsSpanProcessor", "otlp_metric_reader_from_env", "step_key", "model_version"]

# Bucket boundaries the GenAI conventions advise for these two histograms.
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
_CHAT_KEYS = (sc.OPERATION, sc.PROVIDER, "gen_ai.request.model", "gen_ai.response.model")
_MEASURED = frozenset({"chat", "invoke_agent"})
MAX_PENDING = 10_000
"""Spans waiting for a collection; past this the span that ends records them all itself."""
# The attributes the instruments read (`_chat`, `_step`, `step_key`): a waiting span keeps only these,
# not its prompts and replies (~6 KB a span; 10,000 waiting spans held ~60 MB until a scrape).
_KEPT = frozenset({
    *_CHAT_KEYS, sc.WORKFLOW, sc.AGENT_NAME, sc.MODEL_ALIAS, sc.MODEL_ADAPTER, "error.type", sc.COST_USD,
    "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", sc.STEP_FIRST_TRY_VALID, sc.STEP_REPAIRS,
    sc.STEP_VERIFIED, sc.STEP_VERIFIED_PASSED, sc.STEP_ESCALATED, sc.STEP_TIER,
})

log = logging.getLogger(__name__)


def model_version(attrs: Any) -> str:
    """The model version a span ran: its LoRA adapter when the alias uses one, else the model's name."""
    return str(attrs.get(sc.MODEL_ADAPTER) or attrs.get("gen_ai.request.model") or "")


def step_key(attrs: Any) -> dict[str, str]:
    """The per-specialist labels: workflow, agent, model alias, model version."""
    return {
        sc.WORKFLOW: str(attrs.get(sc.WORKFLOW) or ""),
        sc.AGENT_NAME: str(attrs.get(sc.AGENT_NAME) or ""),
        sc.MODEL_ALIAS: str(attrs.get(sc.MODEL_ALIAS) or ""),
        "flotilla.model.version": model_version(attrs),
    }


def otlp_metric_reader_from_env() -> MetricReader | None:
    """A periodic OTLP/HTTP metric reader when the standard OTLP endpoint is set (as for traces), else None."""
    if not (os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")):
        return None
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    return PeriodicExportingMetricReader(OTLPMetricExporter())


class _Ended(NamedTuple):
    """What the instruments need of a finished span."""

    name: str
    attributes: dict[str, Any]
    start_time: int | None
    end_time: int | None
    failed: bool


class FlotillaMetrics:
    """A MeterProvider with flotilla's instruments, a Prometheus registry, and OTLP when configured."""

    def __init__(self, *, prometheus: bool = True, otlp: bool = True, readers: Sequence[MetricReader] = (),
                 service_name: str = "flotilla") -> None:
        all_readers = list(readers)
        self.registry = None
        if prometheus:
            from opentelemetry.exporter.prometheus import PrometheusMetricReader
            from prometheus_client import CollectorRegistry

            # Its own registry, not the process-global one: tests and tools build several runtimes.
            self.registry = CollectorRegistry(auto_describe=True)
            all_readers.append(PrometheusMetricReader(registry=self.registry))
        if otlp and (remote := otlp_metric_reader_from_env()) is not None:
            all_readers.append(remote)
        # No exemplars: they would sample the trace context on every measurement, and the spans
        # that carry these figures are in the audit trail anyway.
        self.provider = MeterProvider(metric_readers=all_readers, resource=Resource.create({"service.name": service_name}),
                                      exemplar_filter=AlwaysOffExemplarFilter())
        meter = self.provider.get_meter("flotilla")
        self.operation_duration = meter.create_histogram(
            "gen_ai.client.operation.duration", unit="s", description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
        self.token_usage = meter.create_histogram(
            "gen_ai.client.token.usage", unit="{token}", description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS)
        self.cost = meter.create_counter("flotilla.model.cost", unit="USD", description="Priced cost of model calls.")
        self.requests = meter.create_counter("flotilla.agent.requests", unit="{step}", description="Agent steps run.")
        self.step_duration = meter.create_histogram(
            "flotilla.agent.duration", unit="s", description="Agent step duration, every tier and repair included.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
        self.first_try = meter.create_counter(
            "flotilla.agent.schema.first_try", unit="{step}",
            description="Steps whose first reply was checked against the output schema, by flotilla.result (pass/fail).")
        self.repairs = meter.create_counter("flotilla.agent.repairs", unit="{call}", description="Repair calls (a reply re-asked with its validation error).")
        self.verifications = meter.create_counter(
            "flotilla.agent.verifications", unit="{answer}", description="Schema-valid answers verified, by flotilla.result (pass/fail).")
        self.escalations = meter.create_counter(
            "flotilla.agent.escalations", unit="{step}",
            description="Steps that went past their first tier, by the tier that ended them (flotilla.step.tier; needs_review: none passed).")
        self.errors = meter.create_counter("flotilla.agent.errors", unit="{step}", description="Failed steps, by error.type.")
        # Finished spans wait here and are turned into measurements when a reader collects (a
        # scrape, an OTLP export): the callback of an observable instrument runs first in every
        # collection, so each collection sees every span ended before it, and the step pays one small copy and an append.
        self._pending: deque[_Ended] = deque()
        meter.create_observable_counter("flotilla.metrics.spans", callbacks=[self._drain], unit="{span}",
                                        description="Spans turned into metrics (reports nothing itself).")

    def defer(self, span: ReadableSpan) -> None:
        # copy(): a plain dict in one C call; filtering the live mapping key by key costs ~10x more.
        kept = {key: value for key, value in (span.attributes or {}).copy().items() if key in _KEPT}
        self._pending.append(_Ended(span.name, kept, span.start_time, span.end_time, span.status.status_code is StatusCode.ERROR))
        if len(self._pending) > MAX_PENDING:  # nobody is collecting (a CLI run): keep memory bounded
            self._drain()

    def _drain(self, options: CallbackOptions | None = None) -> Iterable[Observation]:
        # Counter increments are summed per series first and added once per series: a drain
        # after thousands of steps makes a few dozen `add` calls, not thousands.
        sums: dict[tuple[Counter, tuple[tuple[str, Any], ...]], float] = {}
        while True:
            try:
                span = self._pending.popleft()
            except IndexError:
                break
            try:
                self._record(span, sums)
            except Exception:  # noqa: BLE001 — one odd span must not stop the collection
                log.exception("could not record metrics of span %r", span.name)
        for (counter, labels), total in sums.items():
            counter.add(total, dict(labels))
        return ()

    def _record(self, span: _Ended, sums: dict[tuple[Counter, tuple[tuple[str, Any], ...]], float]) -> None:
        attrs = span.attributes

        def add(counter: Counter, value: float, labels: dict[str, Any]) -> None:
            key = (counter, tuple(labels.items()))
            sums[key] = sums.get(key, 0) + value

        if attrs.get(sc.OPERATION) == "chat":
            self._chat(span, attrs, add)
        else:
            self._step(span, attrs, add)

    def _chat(self, span: _Ended, attrs: Any, add: Callable[[Counter, float, dict[str, Any]], None]) -> None:
        labels: dict[str, Any] = {k: attrs[k] for k in _CHAT_KEYS if attrs.get(k) is not None}
        labels.update(step_key(attrs))
        if error := attrs.get("error.type"):
            labels["error.type"] = error
        if span.start_time and span.end_time:
            self.operation_duration.record((span.end_time - span.start_time) / 1e9, labels)
        for kind in ("input", "output"):
            tokens = attrs.get(f"gen_ai.usage.{kind}_tokens")
            if tokens is not None:
                self.token_usage.record(int(tokens), {**labels, "gen_ai.token.type": kind})
        if cost := attrs.get(sc.COST_USD):
            add(self.cost, float(cost), step_key(attrs))

    def _step(self, span: _Ended, attrs: Any, add: Callable[[Counter, float, dict[str, Any]], None]) -> None:
        key = step_key(attrs)
        add(self.requests, 1, key)
        if span.start_time and span.end_time:
            self.step_duration.record((span.end_time - span.start_time) / 1e9, key)
        first = attrs.get(sc.STEP_FIRST_TRY_VALID)
        if first is not None:
            add(self.first_try, 1, {**key, "flotilla.result": "pass" if first else "fail"})
        if repairs := attrs.get(sc.STEP_REPAIRS):
            add(self.repairs, int(repairs), key)
        verified = int(attrs.get(sc.STEP_VERIFIED) or 0)
        passed = int(attrs.get(sc.STEP_VERIFIED_PASSED) or 0)
        if passed:
            add(self.verifications, passed, {**key, "flotilla.result": "pass"})
        if verified > passed:
            add(self.verifications, verified - passed, {**key, "flotilla.result": "fail"})
        if attrs.get(sc.STEP_ESCALATED):
            add(self.escalations, 1, {**key, sc.STEP_TIER: str(attrs.get(sc.STEP_TIER) or "")})
        if span.failed:
            add(self.errors, 1, {**key, "error.type": str(attrs.get("error.type") or "error")})

    def force_flush(self) -> None:
        self.provider.force_flush()

    def shutdown(self) -> None:
        self.provider.shutdown()

    def prometheus_text(self) -> bytes:
        """The current figures in the Prometheus text format (what `/metrics` serves)."""
        from prometheus_client import generate_latest

        if self.registry is None:
            return b""
        return generate_latest(self.registry)


class MetricsSpanProcessor(SpanProcessor):
    """Hands finished chat and invoke_agent spans to `FlotillaMetrics`, in the thread that ends
    them: an attribute read, a copy of the few attributes measured, an append (bench/bench_metrics.py measures it)."""

    def __init__(self, metrics: FlotillaMetrics) -> None:
        self.metrics = metrics

    def on_end(self, span: ReadableSpan) -> None:
        if (span.attributes or {}).get(sc.OPERATION) in _MEASURED:
            self.metrics.defer(span)

    def shutdown(self) -> None:
        pass  # the provider is the runtime's to shut down (Telemetry.shutdown)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True
