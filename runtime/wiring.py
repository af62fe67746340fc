"""Builds the runtime's parts from Settings. Construction only: no behaviour lives here."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial
from typing import Literal

from flotilla.agents.models.base import ModelClient
from flotilla.agents.models.openai_compat import OpenAICompatibleClient
from flotilla.agents.models.registry import ModelEndpoint, ModelRegistry
from flotilla.audit.runs import RunStore
from flotilla.audit.sanitize import Sanitizer
from flotilla.audit.setup import audit_exporters, open_audit_store, require_driver
from flotilla.audit.store import AuditStore
from flotilla.audit.metrics import FlotillaMetrics
from flotilla.audit.telemetry import JsonLinesSpanExporter, Telemetry
from flotilla.graphs.backends.base import RunBackend
from flotilla.graphs.backends.local import LocalBackend, named_workflows
from flotilla.graphs.runner import WorkflowRunner
from flotilla.guardrails import Guardrails
from flotilla.guardrails.redaction_worker import RedactionWorker
from flotilla.runtime.settings import Settings
from flotilla.tools import open_hub
from flotilla.tools.journal import ToolCallJournal

__all__ = ["Runtime", "build_runtime", "build_registry", "embedded_client", "configured_secrets"]


def embedded_client(settings: Settings, adapter: str | None = None, precision: Literal["int8", "fp32"] = "int8") -> ModelClient:
    from flotilla.audit.errors import MissingExtra
    from flotilla.runtime.console import loading

    try:
        from flotilla.agents.models.embedded import EmbeddedClient, get_engine, weights_cached  # heavy: torch
    except MissingExtra as exc:
        raise MissingExtra(f"{exc.feature} (model aliases without an endpoint in flotilla.yaml use it)", exc.extra, exc.missing) from None
    first = "" if weights_cached(settings.cache_dir) else " (first run converts the weights, ~1 min)"
    path = None
    if adapter:  # an alias's LoRA adapter: merged into its own engine (agents/finetune/adapter.py)
        from flotilla.agents.finetune.adapter import resolve_adapter_path

        path = resolve_adapter_path(adapter, settings.config_file.parent if settings.config_file else None)
    with loading(f"loading the embedded model{first}" + (f" with adapter {path.name}" if path else "")):
        engine = get_engine(settings.cache_dir, precision=precision, adapter=path)
    return EmbeddedClient(engine, max_tokens=settings.embedded_max_tokens)


def _http_client(endpoint: ModelEndpoint, api_key: str | None) -> ModelClient:
    assert endpoint.base_url and endpoint.model, "validated by ModelEndpoint.configured"
    return OpenAICompatibleClient(
        base_url=endpoint.replicas,
        model=endpoint.model,
        api_key=api_key,
        timeout_s=endpoint.timeout_s,
        max_retries=endpoint.max_retries,
        local=endpoint.local,
        breaker=endpoint.breaker,
        health=endpoint.health,
    )


def build_registry(settings: Settings) -> ModelRegistry:
    return ModelRegistry(settings.models, embedded=partial(embedded_client, settings), http_client=_http_client, prices=settings.price_table)


@dataclass
class Runtime:
    settings: Settings
    registry: ModelRegistry
    telemetry: Telemetry
    runs: RunStore
    runner: WorkflowRunner
    audit_store: AuditStore | None = None
    redaction: RedactionWorker | None = None
    backend: RunBackend | None = None
    """Where the HTTP run API sends runs (graphs/backends)."""

    @property
    def trace_file(self):
        return self.settings.data_dir / "traces.jsonl"

    def close(self) -> None:
        self.runs.redaction.drain()  # finished runs' records redacted before the redaction worker stops
        if self.runs.audit_writer is not None:  # runs' `run` records still being appended in the background
            self.runs.audit_writer.drain()
        self.telemetry.shutdown()  # drains the exporters first: they still need the redaction worker
        if self.redaction is not None:
            self.redaction.close()
        self.runs.engine.dispose()
        journal = getattr(self.runner.tools, "journal", None)
        if journal is not None:  # its connection would keep the run store's WAL (old raw pages) on disk
            journal.engine.dispose()
        if self.audit_store is not None:
            self.audit_store.engine.dispose()


def configured_secrets(settings: Settings) -> list[str]:
    """Values of every secret the configuration names, so no exporter can ever record one."""
    names = {"FLOTILLA_MCP_TOKEN", "FLOTILLA_AUDIT_TOKEN", "FLOTILLA_AUDIT_HMAC_KEY", "FLOTILLA_METRICS_TOKEN", "FLOTILLA_API_TOKEN"}
    names |= {t.token_env for t in settings.api_tokens.values()}
    names |= {e.api_key_env for e in settings.models.values() if e.api_key_env}
    names |= {getattr(s, "bearer_token_env", None) for s in settings.mcp_servers.values()} - {None}
    values = [os.environ.get(name, "") for name in names]
    values += [secret.get_secret_value() for secret in (settings.audit_token, settings.audit_hmac_key, settings.metrics_token, settings.api_token) if secret]
    return [v for v in values if v]


def build_runtime(settings: Settings) -> Runtime:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    redaction = RedactionWorker()  # spaCy runs in its own process, started on first use
    sanitizer = Sanitizer(settings.audit_content, redact_many=redaction.redact_many, secrets=configured_secrets(settings))
    hmac_key = settings.audit_hmac_key.get_secret_value() if settings.audit_hmac_key else None
    audit_store = open_audit_store(settings.audit_store_url, hmac_key=hmac_key, sanitizer=sanitizer)
    trace_file = JsonLinesSpanExporter(settings.data_dir / "traces.jsonl", max_bytes=settings.trace_max_bytes, backups=settings.trace_backups)
    # One sanitizing pass per span, shared by the trace file, the audit store and OTLP.
    metrics = FlotillaMetrics() if settings.metrics else None  # live per-specialist metrics, fed from the spans
    # Finished spans wait in a write-ahead log until exported: a killed process loses none (audit/span_wal.py).
    exporters = audit_exporters(audit_store, sanitizer, spool=settings.data_dir / "audit-spool.jsonl", also=[trace_file])
    telemetry = Telemetry(exporters, metrics=metrics, write_ahead=settings.data_dir / "span-wal")
    registry = build_registry(settings)
    rails = Guardrails(model_resolver=lambda alias: registry.resolve(alias).client)
    # Side-effecting tool calls of runs are journaled beside the runs, so a resumed step never repeats one blindly.
    require_driver(settings.run_store_url, "run store (runs_url)")
    journal = ToolCallJournal(settings.run_store_url)
    tools = open_hub(settings.mcp_servers, config_file=settings.config_file, tracer=telemetry.tracer, journal=journal)
    runs = RunStore(settings.run_store_url, audit=audit_store, sanitizer=sanitizer)
    runner = WorkflowRunner(
        registry=registry,
        telemetry=telemetry,
        runs=runs,
        checkpoint_path=settings.data_dir / "checkpoints.sqlite",
        checkpoint_url=settings.checkpoint_url,  # postgresql://… for the postgres backend (graphs/checkpointers.py)
        max_input_bytes=settings.max_input_bytes,
        cache_dir=settings.cache_dir,
        tools=tools,
        rails=rails,
    )
    # `local` and `postgres` both run in this process: only the runner's checkpointer differs.
    backend = LocalBackend(runner, named_workflows(settings.workflows), max_concurrent=settings.max_concurrent_runs)
    if settings.backend == "temporal":  # `flotilla worker`s run them; this process submits and follows
        from flotilla.audit.errors import MissingExtra

        MissingExtra.require("the temporal backend", "temporal", "temporalio", "temporalio.langgraph")
        from flotilla.graphs.backends.temporal import TemporalBackend

        backend = TemporalBackend(settings.temporal, runs, workflows=settings.workflows, resolve=backend.workflows)  # names only, as local
    return Runtime(settings, registry, telemetry, runs, runner, audit_store, redaction, backend)
