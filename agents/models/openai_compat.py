"""Client for vLLM and any OpenAI-compatible server.

Structured output uses `response_format={"type": "json_schema", ...}`, which vLLM's
OpenAI-compatible server turns into grammar-constrained decoding (its structured outputs).
A vLLM LoRA adapter is addressed by its name in `model` (`--lora-modules name=path`).
Retries with exponential backoff on connection errors, 5xx and 429 — never on other 4xx.
`base_url` may list replicas: each call goes to the least busy one whose circuit breaker is
closed, fails over to the next at once, and the whole call — retries and failovers included —
ends by its deadline (see endpoints.py).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from typing import Any

import openai
from opentelemetry import trace
from tenacity import stop_after_attempt, stop_before_delay

from flotilla.agents.models.base import ChatRequest, ChatResult, ModelBadResponse, ModelTimeout, ModelUnavailable, retrying
from flotilla.agents.models.chat_http import ChatEndpoint
from flotilla.agents.models.endpoints import (
    BREAKER_STATE_ATTR,
    ENDPOINT_ATTR,
    BreakerSettings,
    DeadlineSpent,
    HealthCheck,
    NoReplicaAvailable,
    ReplicaPool,
)

__all__ = ["OpenAICompatibleClient"]


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, openai.APITimeoutError):
        return False  # the call's own deadline is spent; retrying would exceed it
    if isinstance(exc, openai.APIConnectionError):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code == 429 or exc.status_code >= 500
    return False


def _endpoint_failure(exc: BaseException) -> bool:
    """Counts against a replica's breaker: it could not be reached, broke, or was too slow.
    A 4xx (429 included) means the replica is up and answering."""
    if isinstance(exc, (openai.APIConnectionError, TimeoutError)):  # APITimeoutError is a connection error
        return True
    return isinstance(exc, openai.APIStatusError) and exc.status_code >= 500


class OpenAICompatibleClient:
    def __init__(
        self,
        *,
        base_url: str | Sequence[str],
        model: str,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        local: bool = True,
        provider: str = "openai-compatible",
        breaker: BreakerSettings | None = None,
        health: HealthCheck | None = None,
        alias: str | None = None,
    ) -> None:
        self.model = model
        self.name = model
        self.timeout_s = timeout_s
        self.local = local
        self.provider = provider
        self._attempts = max_retries + 1
        self._backoff_s = backoff_s
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        if not urls:
            raise ValueError("OpenAICompatibleClient needs at least one base_url")
        self.base_urls = urls
        # The SDK's own retries are off: tenacity owns the policy, so it is the same everywhere.
        self._pool: ReplicaPool[ChatEndpoint] = ReplicaPool(
            alias=alias or model,
            urls=urls,
            make_client=lambda url: ChatEndpoint.open(url, api_key or "unused", timeout_s),
            is_failure=_endpoint_failure,
            breaker=breaker or BreakerSettings(),
            health=health or HealthCheck(),
        )

    @property
    def pool(self) -> ReplicaPool[ChatEndpoint]:
        """The replicas with their breakers (states, outstanding calls)."""
        return self._pool

    @property
    def _where(self) -> str:
        return " | ".join(self.base_urls)

    async def complete(self, request: ChatRequest) -> ChatResult:
        kwargs: dict[str, Any] = {
            "messages": request.messages,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "timeout": request.timeout_s or self.timeout_s,
        }
        if request.json_schema is not None:
            # Sent as `extra_body` (the SDK's supported pass-through): the same request body, but
            # the SDK does not walk the whole JSON Schema through its type-driven transform
            # (thousands of typing.get_origin calls per request, on the event loop).
            kwargs["extra_body"] = {"response_format": {
                "type": "json_schema",
                "json_schema": {"name": request.schema_name, "schema": request.json_schema, "strict": True},
            }}
        message, result = await self.chat_completion(kwargs)
        if message.content is None:
            raise ModelBadResponse(f"model {self.model!r} at {result.extra.get('endpoint', self._where)} returned an empty message")
        return result

    async def chat_completion(self, kwargs: dict[str, Any]) -> tuple[Any, ChatResult]:
        """One `chat.completions.create` call (SDK keyword arguments; `model` is this client's)
        under the retry policy, with typed errors. Returns the SDK message and the ChatResult.
        The agent tool loop uses it directly for native tool calling.

        `timeout` is the deadline of the whole call: every retry, backoff and failover fits in it."""
        kwargs = {"model": self.model, "timeout": self.timeout_s, **kwargs}
        budget = float(kwargs["timeout"])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        started = time.perf_counter()

        body = _plain_body(kwargs)

        async def send(endpoint: ChatEndpoint) -> Any:
            timeout = max(deadline - loop.time(), 0.001)
            if body is None:
                return await endpoint.sdk.chat.completions.create(**{**kwargs, "timeout": timeout})
            # The same request `create` sends, posted without the SDK's per-call machinery (chat_http.py).
            return await endpoint.post(body, timeout)

        failures: list[BaseException] = []

        async def attempt_once() -> tuple[Any, Any]:
            try:
                return await self._pool.call(send, failover=_retryable, deadline=deadline)
            except NoReplicaAvailable:
                raise
            except Exception as exc:
                failures.append(exc)
                raise

        try:
            async with asyncio.timeout(budget):
                try:  # the first attempt outside tenacity: its async machinery costs the loop ~0.08 ms a call
                    response, replica = await attempt_once()
                except NoReplicaAvailable:
                    raise
                except Exception as exc:
                    response, replica = await self._retry(attempt_once, exc, started, budget)
        except NoReplicaAvailable as exc:
            if not failures:  # open before this call: say so
                raise ModelUnavailable(f"model {self.model!r}: {exc}") from None
            # This call's own failures opened the breakers: report what went wrong, then that.
            error = self._typed(failures[-1], budget)
            raise type(error)(f"{error}; {exc}") from None
        except Exception as exc:
            raise self._typed(exc, budget) from None
        span = trace.get_current_span()
        if span.is_recording() and str(getattr(span, "name", "")).startswith("chat "):
            span.set_attributes({ENDPOINT_ATTR: replica.url, BREAKER_STATE_ATTR: replica.state})
        if not getattr(response, "choices", None) or response.choices[0].message is None:
            raise ModelBadResponse(f"model {self.model!r} at {replica.url} returned no choices")
        choice = response.choices[0]
        usage = response.usage
        return choice.message, ChatResult(
            text=choice.message.content or "",
            model=response.model or self.model,
            provider=self.provider,
            input_tokens=usage.prompt_tokens if usage else 0,
            output_tokens=usage.completion_tokens if usage else 0,
            latency_ms=(time.perf_counter() - started) * 1000,
            local=self.local,
            finish_reason=choice.finish_reason or "stop",
            extra={"endpoint": replica.url},
        )

    async def _retry(self, attempt_once: Any, first: Exception, started: float, budget: float) -> tuple[Any, Any]:
        """Attempts 2..n after a failed first one, as one tenacity policy over all n would run them:
        the same exponential backoff (`backoff_s`, then twice that, …), none past the deadline."""
        spent = time.perf_counter() - started
        if self._attempts <= 1 or not _retryable(first) or spent + self._backoff_s >= budget:
            raise first
        await asyncio.sleep(self._backoff_s)
        policy = retrying(_retryable, attempts=self._attempts - 1, backoff_s=self._backoff_s * 2)
        policy = policy.copy(stop=stop_after_attempt(self._attempts - 1) | stop_before_delay(budget - spent - self._backoff_s))
        async for attempt in policy:
            with attempt:
                return await attempt_once()
        raise first  # not reached: the policy re-raises the last error

    def _typed(self, exc: BaseException, budget: float) -> Exception:
        """The typed flotilla error for what went wrong in a call (anything else: as it is)."""
        where = self._where
        if isinstance(exc, (openai.APITimeoutError, TimeoutError, DeadlineSpent)):
            return ModelTimeout(f"model {self.model!r} at {where} did not answer within {budget:g}s")
        if isinstance(exc, openai.APIConnectionError):
            return ModelUnavailable(f"cannot reach model {self.model!r} at {where}: {exc}")
        if isinstance(exc, openai.APIStatusError):
            kind = ModelUnavailable if _retryable(exc) else ModelBadResponse
            return kind(f"model {self.model!r} at {where} answered HTTP {exc.status_code}: {_detail(exc)}")
        if isinstance(exc, openai.OpenAIError):
            return ModelBadResponse(f"model {self.model!r} at {where}: {exc}")
        if isinstance(exc, json.JSONDecodeError):
            return ModelBadResponse(f"model {self.model!r} at {where} answered with a body that is not JSON ({exc.msg})")
        return exc  # type: ignore[return-value]  # not a model error: raised unchanged

    async def aclose(self) -> None:
        await self._pool.aclose()
        for replica in self._pool.replicas:
            await replica.client.close()


_SDK_OPTIONS = frozenset({"timeout", "extra_body"})
"""`create` keywords that are request options, not body fields (`extra_body` is merged into the body)."""
_JSON_SCALARS = (str, int, float, bool, type(None))


def _plain_body(kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON body `chat.completions.create(**kwargs)` would send, when every argument is
    already plain JSON (which the SDK's transform leaves as it is); None otherwise (SDK objects,
    streaming, extra headers or query), and the call goes through `create`."""
    if kwargs.get("stream") or any(key.startswith("extra_") and key != "extra_body" for key in kwargs):
        return None
    body = {key: value for key, value in kwargs.items() if key not in _SDK_OPTIONS}
    if not _is_json(body):
        return None
    extra = kwargs.get("extra_body")
    if extra is not None:
        if not isinstance(extra, dict) or not _is_json(extra):
            return None
        body.update(extra)
    return body


def _is_json(value: Any) -> bool:
    if isinstance(value, _JSON_SCALARS):
        return True
    if type(value) is dict:
        return all(type(k) is str and _is_json(v) for k, v in value.items())
    if type(value) is list:
        return all(_is_json(v) for v in value)
    return False


def _detail(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:300]
    return str(exc.message)[:300]
