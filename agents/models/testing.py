"""Deterministic model doubles for tests and benchmarks of pure orchestration logic.

`FunctionModel` answers each request with a function of it, instantly — like Pydantic AI's
FunctionModel. It is for logic that does not depend on a real model; anything whose
behaviour depends on the model runs against the embedded engine instead.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable

from flotilla.agents.models.base import ChatRequest, ChatResult

__all__ = ["FunctionModel"]

Responder = Callable[[ChatRequest], str | Awaitable[str]]


class FunctionModel:
    provider = "function"
    """Answers in this process: its chat spans are INTERNAL (see `audit.semconv.model_span_kind`)."""

    def __init__(self, respond: Responder, *, name: str = "function-model", local: bool = True) -> None:
        self.respond = respond
        self.name = name
        self.local = local
        self.requests: list[ChatRequest] = []

    async def complete(self, request: ChatRequest) -> ChatResult:
        started = time.perf_counter()
        self.requests.append(request)
        text = self.respond(request)
        if inspect.isawaitable(text):
            text = await text
        return ChatResult(
            text=text,
            model=self.name,
            provider=self.provider,
            input_tokens=sum(len(m["content"].split()) for m in request.messages),
            output_tokens=len(text.split()),
            latency_ms=(time.perf_counter() - started) * 1000,
            local=self.local,
        )
