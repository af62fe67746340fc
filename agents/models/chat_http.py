"""One replica of an OpenAI-compatible server: the SDK client, and a direct POST for plain bodies.

A chat call whose body is plain JSON (every flotilla agent step's: messages, limits, a JSON
Schema) is posted straight over the SDK's own httpx client (`http_client=`, one connection
pool), and its reply read from the JSON. The SDK's `post` sends the same bytes, but its per-call
request options, URL and header merging and its lenient model construction of the reply cost
~0.8 ms of event-loop CPU a call here (`bench/bench_orchestration.py`): a quarter of what a
step's orchestration costs. Failures are raised as the SDK raises them (`APITimeoutError`,
`APIConnectionError`, `APIStatusError` with the status and body), so retries, breakers and
typed errors treat both paths alike. Anything else (tools, streaming, SDK objects) goes through
the SDK.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx2
import openai
from openai.types.chat import ChatCompletion

__all__ = ["ChatEndpoint", "PlainReply"]


@dataclass(frozen=True, slots=True)
class PlainMessage:
    content: str | None
    role: str = "assistant"
    tool_calls: None = None


@dataclass(frozen=True, slots=True)
class PlainUsage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True, slots=True)
class PlainChoice:
    message: PlainMessage
    finish_reason: str | None = None


@dataclass(frozen=True, slots=True)
class PlainReply:
    """What the client reads of a `ChatCompletion`, for a reply with no tool calls."""

    model: str | None
    choices: list[PlainChoice] = field(default_factory=list)
    usage: PlainUsage | None = None


@dataclass
class ChatEndpoint:
    sdk: openai.AsyncOpenAI
    http: httpx2.AsyncClient
    url: str
    headers: dict[str, str]

    @classmethod
    def open(cls, base_url: str, api_key: str, timeout_s: float) -> ChatEndpoint:
        http = openai.DefaultAsyncHttpx2Client(timeout=timeout_s)  # the SDK's own defaults: pool limits, redirects
        sdk = openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout_s, http_client=http)
        headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json", "Accept": "application/json"}
        return cls(sdk, http, str(sdk.base_url).rstrip("/") + "/chat/completions", headers)

    async def post(self, body: dict[str, Any], timeout: float) -> PlainReply | ChatCompletion:
        request = self.http.build_request("POST", self.url, content=json.dumps(body).encode(), headers=self.headers, timeout=timeout)
        try:
            response = await self.http.send(request)  # the body read in full
        except httpx2.TimeoutException as exc:
            raise openai.APITimeoutError(request=request) from exc
        except httpx2.HTTPError as exc:
            raise openai.APIConnectionError(request=request) from exc
        if response.status_code >= 400:
            try:
                error_body: Any = response.json()
            except ValueError:
                error_body = response.text
            raise openai.APIStatusError(f"Error code: {response.status_code} - {error_body}", response=response, body=error_body)
        return reply_of(response.json())  # not JSON: json.JSONDecodeError, as through the SDK

    async def close(self) -> None:
        await self.sdk.close()


def reply_of(data: Any) -> PlainReply | ChatCompletion:
    """The reply as the client reads it; anything but a plain message (tool calls, an odd shape)
    as the SDK's lenient `ChatCompletion.construct` reads it."""
    try:
        choice = data["choices"][0]
        message = choice["message"]
        if message.get("tool_calls") or not isinstance(message.get("content", ""), (str, type(None))):
            raise ValueError("not a plain message")
        usage = data.get("usage") or None
        return PlainReply(
            model=data.get("model"),
            choices=[PlainChoice(PlainMessage(message.get("content"), message.get("role") or "assistant"), choice.get("finish_reason"))],
            usage=None if usage is None else PlainUsage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)),
        )
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        return ChatCompletion.construct(**data) if isinstance(data, dict) else ChatCompletion.construct()
