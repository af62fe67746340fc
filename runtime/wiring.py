"""Builds the runtime's parts from Settings. Construction only: no behaviour lives here."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from agents.models.base import ModelClient
from agents.models.openai_compat import OpenAICompatibleClient
from agents.models.registry import ModelEndpoint, ModelRegistry
from audit.runs import RunStore
from audit.telemetry import JsonLinesSpanExporter, Telemetry, otlp_exporter_from_env
from graphs.runner import WorkflowRunner
from guardrails import Guardrails
from runtime.settings import Settings
from tools import open_hub

__all__ = ["Runtime", "build_runtime", "build_registry", "embedded_client"]


def embedded_client(settings: Settings) -> ModelClient:
    from agents.models.embedded import EmbeddedClient, get_engine  # heavy: torch + weights

    return EmbeddedClient(get_engine(settings.cache_dir), max_tokens=settings.embedded_max_tokens)


def _http_client(endpoint: ModelEndpoint, api_key: str | None) -> ModelClient:
    assert endpoint.base_url and endpoint.model, "validated by ModelEndpoint.configured"
    return OpenAICompatibleClient(
        base_url=endpoint.base_url,
        model=endpoint.model,
        api_key=api_key,
        timeout_s=endpoint.timeout_s,
        max_retries=endpoint.max_retries,
        local=endpoint.local,
    )


def build_registry(settings: Settings) -> ModelRegistry:
    return ModelRegistry(settings.models, embedded=partial(embedded_client, settings), http_client=_http_client)


@dataclass
class Runtime:
    settings: Settings
    registry: ModelRegistry
    telemetry: Telemetry
    runs: RunStore
    runner: WorkflowRunner

    @property
    def trace_file(self):
        return self.settings.data_dir / "traces.jsonl"

    def close(self) -> None:
        self.telemetry.shutdown()
        self.runs.engine.dispose()


def build_runtime(settings: Settings) -> Runtime:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    exporters = [JsonLinesSpanExporter(settings.data_dir / "traces.jsonl")]
    if (otlp := otlp_exporter_from_env()) is not None:
        exporters.append(otlp)
    telemetry = Telemetry(exporters)
    registry = build_registry(settings)
    rails = Guardrails(model_resolver=lambda alias: registry.resolve(alias).client)
    tools = open_hub(settings.mcp_servers, config_file=settings.config_file, tracer=telemetry.tracer)
    runs = RunStore(f"sqlite:///{settings.data_dir / 'runs.sqlite'}")
    runner = WorkflowRunner(
        registry=registry,
        telemetry=telemetry,
        runs=runs,
        checkpoint_path=settings.data_dir / "checkpoints.sqlite",
        max_input_bytes=settings.max_input_bytes,
        tools=tools,
        rails=rails,
    )
    return Runtime(settings, registry, telemetry, runs, runner)
