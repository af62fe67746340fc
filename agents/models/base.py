"""The contract between an agent and its model: one chat call, JSON-schema constrained.

It mirrors the OpenAI Chat Completions API with `response_format={"type": "json_schema"}`,
which vLLM's structured outputs, flotilla's own model server and frontier providers speak.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from flotilla.audit.errors import FlotillaError

__all__ = [
    "ChatRequest",
    "ChatResult",
    "ModelClient",
    "ModelError",
    "ModelUnavailable",
    "ModelTimeout",
    "ModelBadResponse",
    "retrying",
]


@dataclass(frozen=True, slots=True)
class ChatRequest:
    messages: list[dict[str, str]]
    """OpenAI-style messages: `{"role": "system"|"user"|"assistant", "content": str}`."""
    json_schema: dict[str, Any] | None = None
    """When set, the reply must be JSON valid against this schema."""
    schema_name: str = "output"
    max_tokens: int = 512
    temperature: float = 0.0
    timeout_s: float | None = None
    """Per-call deadline; None uses the client's default."""


@dataclass(frozen=True, slots=True)
class ChatResult:
    text: str
    model: str
    """The model that answered, as the server names it."""
    provider: str
    """`embedded`, `openai-compatible`, … (gen_ai.provider.name)."""
    input_tokens: int
    output_tokens: int
    latency_ms: float
    local: bool
    """True when the call never left this machine's own model processes."""
    finish_reason: str = "stop"
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class ModelClient(Protocol):
    """Anything that can answer a `ChatRequest`."""

    name: str
    """Human-readable identity for traces, e.g. `embedded:SmolLM2-135M-Instruct`."""

    async def complete(self, request: ChatRequest) -> ChatResult: ...


class ModelError(FlotillaError):
    """A model call failed."""

    code = "model_error"


class ModelUnavailable(ModelError):
    """The model endpoint could not be reached or kept failing (connection, 5xx, 429)."""

    code = "model_unavailable"


class ModelTimeout(ModelError):
    """The model did not answer within the call's timeout."""

    code = "model_timeout"


class ModelBadResponse(ModelError):
    """The endpoint answered, but not with something usable (4xx, malformed body)."""

    code = "model_bad_response"


def retrying(retryable: Callable[[BaseException], bool], *, attempts: int, backoff_s: float) -> AsyncRetrying:
    """The retry policy of every HTTP model client: exponential backoff (capped at 8 s) on the
    errors `retryable` accepts — connection errors, 5xx and 429 — and the last error re-raised."""
    return AsyncRetrying(
        retry=retry_if_exception(retryable),
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=backoff_s, max=8),
        reraise=True,
    )
