"""A scripted OpenAI-compatible endpoint that answers with the next scripted assistant message
(which may carry `tool_calls`) and records every request. It stands in for a remote HTTP
model (vLLM with a tool parser, a frontier API) in tests of the native tool-calling loop's
own behaviour — message threading, tool payloads, errors — never for a model's judgement."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request

__all__ = ["ScriptedToolCaller", "tool_call", "final"]


def tool_call(call_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}


def final(content: dict[str, Any]) -> dict[str, Any]:
    return {"role": "assistant", "content": json.dumps(content)}


@dataclass
class ScriptedToolCaller:
    script: list[dict[str, Any]]
    requests: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> dict[str, Any]:
            body = await request.json()
            self.requests.append(body)
            message = self.script.pop(0)
            reason = "tool_calls" if message.get("tool_calls") else "stop"
            message = {"role": "assistant", "content": None, **message}
            return {
                "id": f"chatcmpl-{len(self.requests)}",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": reason}],
                "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25},
            }

        return app
