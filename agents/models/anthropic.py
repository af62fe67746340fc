"""Anthropic through the `anthropic` SDK, speaking the ModelClient protocol.

Structured output: the request's JSON schema becomes the input schema of one tool the model
is forced to call (`tool_choice={"type": "tool", …}`); the tool call's input is the reply.
System messages go in `system`; retries are tenacity's, as in the OpenAI-compatible client.
The SDK (2.x) takes no `temperature`, so the request's is not sent. Anthropic is never local.
"""

from __future__ import annotations

import json
import time
from typing import Any

from flotilla.agents.models.registry import EXTRA_MODULES
from flotilla.audit.errors import MissingExtra

MissingExtra.require("the anthropic model provider", "anthropic", *EXTRA_MODULES["anthropic"])  # the extra's import site

import anthropic  # noqa: E402

from flotilla.agents.models.base import ChatRequest, ChatResult, ModelBadResponse, ModelTimeout, ModelUnavailable, retrying

__all__ = ["AnthropicClient"]


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, anthropic.APITimeoutError):
        return False
    if isinstance(exc, anthropic.APIConnectionError):
        return True
    if isinstance(exc, anthropic.APIStatusError):
        return exc.status_code in (429, 529) or exc.status_code >= 500
    return False


class AnthropicClient:
    local = False
    provider = "anthropic"

    def __init__(
        self,
        *,
        model: str,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
    ) -> None:
        self.model = model
        self.name = model
        self.timeout_s = timeout_s
        self._attempts = max_retries + 1
        self._backoff_s = backoff_s
        self._client = anthropic.AsyncAnthropic(api_key=api_key or "unused", base_url=base_url, max_retries=0, timeout=timeout_s)

    async def complete(self, request: ChatRequest) -> ChatResult:
        system = "\n\n".join(m["content"] for m in request.messages if m["role"] == "system")
        messages = [{"role": m["role"], "content": m["content"]} for m in request.messages if m["role"] != "system"]
        timeout = request.timeout_s or self.timeout_s
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": request.max_tokens,
            "timeout": timeout,
        }
        if system:
            kwargs["system"] = system
        tool_name = "".join(c if c.isalnum() or c in "_-" else "_" for c in request.schema_name)[:64] or "output"
        if request.json_schema is not None:
            kwargs["tools"] = [{"name": tool_name, "description": "Give your answer.", "input_schema": request.json_schema}]
            kwargs["tool_choice"] = {"type": "tool", "name": tool_name}
        started = time.perf_counter()
        try:
            async for attempt in retrying(_retryable, attempts=self._attempts, backoff_s=self._backoff_s):
                with attempt:
                    response = await self._client.messages.create(**kwargs)
        except anthropic.APITimeoutError:
            raise ModelTimeout(f"Anthropic model {self.model!r} did not answer within {timeout:g}s") from None
        except anthropic.APIConnectionError as exc:
            raise ModelUnavailable(f"cannot reach Anthropic for model {self.model!r}: {exc}") from None
        except anthropic.APIStatusError as exc:
            kind = ModelUnavailable if _retryable(exc) else ModelBadResponse
            raise kind(f"Anthropic model {self.model!r} answered HTTP {exc.status_code}: {str(exc.message)[:300]}") from None
        except anthropic.AnthropicError as exc:
            raise ModelBadResponse(f"Anthropic model {self.model!r}: {exc}") from None
        text = _reply_text(response, tool_name if request.json_schema is not None else None)
        if text is None:
            raise ModelBadResponse(f"Anthropic model {self.model!r} returned no usable content")
        usage = response.usage
        return ChatResult(
            text=text,
            model=response.model or self.model,
            provider=self.provider,
            input_tokens=usage.input_tokens if usage else 0,
            output_tokens=usage.output_tokens if usage else 0,
            latency_ms=(time.perf_counter() - started) * 1000,
            local=False,
            finish_reason=response.stop_reason or "stop",
        )

    async def aclose(self) -> None:
        await self._client.close()


def _reply_text(response: Any, tool_name: str | None) -> str | None:
    for block in response.content or ():
        if tool_name is not None and getattr(block, "type", None) == "tool_use" and block.name == tool_name:
            return json.dumps(block.input, ensure_ascii=False)
    texts = [block.text for block in response.content or () if getattr(block, "type", None) == "text"]
    return "".join(texts) if texts and tool_name is None else None
