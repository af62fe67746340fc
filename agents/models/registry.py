"""Model aliases → clients.

Workflows name models by alias (`specialist-extract`, `frontier`); flotilla.yaml binds an
alias to an endpoint. An alias that is declared but has no endpoint falls back to the
embedded model, and the registry says so (`Binding.fallback`) so the run can report it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from flotilla.agents.models.base import ModelClient
from flotilla.agents.models.endpoints import BreakerSettings, HealthCheck
from flotilla.agents.models.policy import GuardedClient, PriceTable
from flotilla.audit.errors import ConfigError

__all__ = ["ModelEndpoint", "Binding", "ModelRegistry", "EMBEDDED_ALIAS", "EXTRA_MODULES"]

EMBEDDED_ALIAS = "embedded"

# What each optional provider imports, by the flotilla extra that installs it (checked by
# `flotilla validate` without importing, and at each provider's import site).
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "embedded": ("torch", "transformers", "safetensors", "gguf", "xgrammar"),
    "anthropic": ("anthropic",),
}


class ModelEndpoint(BaseModel):
    """One alias in flotilla.yaml's `models:` section."""

    model_config = ConfigDict(extra="forbid")

    provider: Literal["embedded", "openai-compatible", "anthropic"] = "embedded"
    base_url: str | list[str] | None = None
    """e.g. `http://vllm-extract:8000/v1`, or a list of replicas serving the same model (calls go
    to the least busy healthy one). Unset → the alias falls back to embedded (`anthropic`:
    optional, the SDK's default API URL)."""
    model: str | None = None
    """Model name the server knows: a base model or a vLLM LoRA adapter name."""
    adapter: str | None = None
    """`provider: embedded` only: a LoRA adapter (PEFT folder, relative to flotilla.yaml, or
    `package:folder`) the embedded engine merges in for this alias. On vLLM, `model:` names it."""
    precision: Literal["int8", "fp32"] | None = None
    """`provider: embedded` only: the engine's weights for this alias. Default `int8` (faster
    decode); `fp32` is exact — an adapter merged in keeps more of its accuracy (measured in
    agents/document_triage/adapters/extract/README.md) and answers as vLLM does."""
    api_key_env: str | None = None
    """Name of the environment variable holding the API key (never the key itself)."""
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=3, ge=0, le=10)
    local: bool = True
    """Whether the endpoint runs inside the organisation (self-hosted vLLM) or not."""
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    """Per-replica circuit breaker: `{failures: 5, reset_s: 30}`."""
    health: HealthCheck = Field(default_factory=HealthCheck)
    """Background health probes of each replica: `{period_s: 10, path: /health}` (off by default)."""
    tool_calls: Literal["native", "json"] = "json"
    """How an agent with tools talks to this model. `json`: each turn is a JSON-schema constrained
    `{"tool", "arguments"} | {"final"}` reply, as on the embedded engine — works on any server
    with structured outputs (a stock `vllm serve`). `native`: OpenAI tool calls (`tools=[…]`),
    for frontier APIs and vLLM started with `--enable-auto-tool-choice --tool-call-parser …`."""

    @model_validator(mode="after")
    def _replicas_are_urls(self) -> "ModelEndpoint":
        if isinstance(self.base_url, list):
            if not self.base_url:
                raise ValueError("base_url: an empty list; give one URL or a list of replica URLs")
            if self.provider != "openai-compatible":
                raise ValueError(f"base_url: a list of replicas needs provider openai-compatible, not {self.provider}")
            if len(set(self.base_url)) != len(self.base_url):
                raise ValueError("base_url: the same replica URL is listed twice")
        if self.adapter is not None and self.provider != "embedded":
            raise ValueError(f"adapter: only provider embedded merges an adapter; on {self.provider}, `model:` names the served adapter")
        if self.precision is not None and self.provider != "embedded":
            raise ValueError(f"precision: only provider embedded has a precision to choose; {self.provider} serves its own")
        return self

    @property
    def replicas(self) -> list[str]:
        """The endpoint's base URLs (one per replica)."""
        if self.base_url is None:
            return []
        return [self.base_url] if isinstance(self.base_url, str) else list(self.base_url)

    @property
    def configured(self) -> bool:
        if self.provider == "anthropic":
            return bool(self.model)
        return self.provider == "openai-compatible" and bool(self.base_url)


@dataclass(frozen=True, slots=True)
class Binding:
    alias: str
    client: ModelClient
    fallback: bool
    """True when the alias had no endpoint and the embedded model stands in."""
    local: bool = True
    """Whether calls stay inside the organisation (embedded, or an endpoint marked `local`)."""


class ModelRegistry:
    """Resolves aliases to shared clients; one client per alias, one embedded engine.

    Every client is wrapped in a `GuardedClient`, so the current run's sensitivity policy,
    budgets and cost accounting (flotilla.agents.models.policy) apply to every model call.
    """

    def __init__(
        self,
        endpoints: dict[str, ModelEndpoint],
        *,
        embedded: Callable[..., ModelClient],
        http_client: Callable[[ModelEndpoint, str | None], ModelClient],
        anthropic_client: Callable[[ModelEndpoint, str | None], ModelClient] | None = None,
        prices: PriceTable | None = None,
    ) -> None:
        self._endpoints = dict(endpoints)
        self._embedded = embedded
        self._http_client = http_client
        self._anthropic_client = anthropic_client or _anthropic_client
        self.prices = prices or PriceTable()
        self._bindings: dict[str, Binding] = {}

    @property
    def aliases(self) -> set[str]:
        return set(self._endpoints) | {EMBEDDED_ALIAS}

    def resolve(self, alias: str) -> Binding:
        if alias in self._bindings:
            return self._bindings[alias]
        if alias not in self.aliases:
            known = ", ".join(sorted(self.aliases))
            raise ConfigError(f"unknown model alias {alias!r}; declare it under `models:` in flotilla.yaml (known: {known})")
        endpoint = self._endpoints.get(alias)
        if endpoint is None or not endpoint.configured:
            # An adapter or precision of its own gets the alias its own engine; others share the base one.
            own = {"adapter": endpoint.adapter, "precision": endpoint.precision} if endpoint is not None else {}
            inner = self._embedded(**{key: value for key, value in own.items() if value})
            client = GuardedClient(inner, alias=alias, local=True, prices=self.prices)
            binding = Binding(alias, client, fallback=alias != EMBEDDED_ALIAS, local=True)
        else:
            api_key = None
            if endpoint.api_key_env:
                api_key = os.environ.get(endpoint.api_key_env)
                if api_key is None:
                    raise ConfigError(
                        f"model alias {alias!r} reads its API key from ${endpoint.api_key_env}, which is not set"
                    )
            make = self._anthropic_client if endpoint.provider == "anthropic" else self._http_client
            local = endpoint.local and endpoint.provider != "anthropic"
            inner = make(endpoint, api_key)
            pool = getattr(inner, "pool", None)
            if pool is not None:  # replica pools name the alias in their span events and errors
                pool.alias = alias
            client = GuardedClient(
                inner, alias=alias, local=local, prices=self.prices, local_fallback=self._embedded, tool_calls=endpoint.tool_calls
            )
            binding = Binding(alias, client, fallback=False, local=client.local)
        self._bindings[alias] = binding
        return binding


def _anthropic_client(endpoint: ModelEndpoint, api_key: str | None) -> ModelClient:
    from flotilla.agents.models.anthropic import AnthropicClient  # the SDK loads only when an alias uses it

    assert endpoint.model, "validated by ModelEndpoint.configured"
    return AnthropicClient(
        model=endpoint.model, api_key=api_key, base_url=endpoint.base_url, timeout_s=endpoint.timeout_s, max_retries=endpoint.max_retries
    )
