"""Client for vLLM and any OpenAI-compatible server.

Structured output uses `response_format={"type": "json_schema", ...}`, which vLLM's
OpenAI-compatible server turns into grammar-constrained decoding (its structured outputs).
A vLLM LoRA adapter is addressed by its name in `model` (`--lora-modules name=path`).
Retries with exponential backoff on connection errors, 5xx and 429 — never on other 4xx.
"""

from __future__ import annotations

import json
import time
from typing import Any

import openai

from flotilla.agents.models.base import ChatRequest, ChatResult, ModelBadResponse, ModelTimeout, ModelUnavailable, retrying

__all__ = ["OpenAICompatibleClient"]


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, openai.APITimeoutError):
        return False  # the call's own deadline is spent; retrying would exceed it
    if isinstance(exc, openai.APIConnectionError):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code == 429 or exc.status_code >= 500
    return False


class OpenAICompatibleClient:
    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        local: bool = True,
        provider: str = "openai-compatible",
    ) -> None:
        self.model = model
        self.name = model
        self.timeout_s = timeout_s
        self.local = local
        self.provider = provider
        self._attempts = max_retries + 1
        self._backoff_s = backoff_s
        # The SDK's own retries are off: tenacity owns the policy, so it is the same everywhere.
        self._client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key or "unused", max_retries=0, timeout=timeout_s)

    async def complete(self, request: ChatRequest) -> ChatResult:
        kwargs: dict[str, Any] = {
            "messages": request.messages,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "timeout": request.timeout_s or self.timeout_s,
        }
        if request.json_schema is not None:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": request.schema_name, "schema": request.json_schema, "strict": True},
            }
        message, result = await self.chat_completion(kwargs)
        if message.content is None:
            raise ModelBadResponse(f"model {self.model!r} at {self._client.base_url} returned an empty message")
        return result

    async def chat_completion(self, kwargs: dict[str, Any]) -> tuple[Any, ChatResult]:
        """One `chat.completions.create` call (SDK keyword arguments; `model` is this client's)
        under the retry policy, with typed errors. Returns the SDK message and the ChatResult.
        The agent tool loop uses it directly for native tool calling."""
        kwargs = {"model": self.model, "timeout": self.timeout_s, **kwargs}
        started = time.perf_counter()
        try:
            async for attempt in retrying(_retryable, attempts=self._attempts, backoff_s=self._backoff_s):
                with attempt:
                    response = await self._client.chat.completions.create(**kwargs)
        except openai.APITimeoutError:
            raise ModelTimeout(f"model {self.model!r} at {self._client.base_url} did not answer within {kwargs['timeout']:g}s") from None
        except openai.APIConnectionError as exc:
            raise ModelUnavailable(f"cannot reach model {self.model!r} at {self._client.base_url}: {exc}") from None
        except openai.APIStatusError as exc:
            kind = ModelUnavailable if _retryable(exc) else ModelBadResponse
            raise kind(f"model {self.model!r} at {self._client.base_url} answered HTTP {exc.status_code}: {_detail(exc)}") from None
        except openai.OpenAIError as exc:
            raise ModelBadResponse(f"model {self.model!r} at {self._client.base_url}: {exc}") from None
        except json.JSONDecodeError as exc:
            raise ModelBadResponse(f"model {self.model!r} at {self._client.base_url} answered with a body that is not JSON ({exc.msg})") from None
        if not getattr(response, "choices", None) or response.choices[0].message is None:
            raise ModelBadResponse(f"model {self.model!r} at {self._client.base_url} returned no choices")
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
        )

    async def aclose(self) -> None:
        await self._client.close()


def _detail(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:300]
    return str(exc.message)[:300]
