"""A scripted OpenAI-compatible chat server: each request is answered by the next scripted
behaviour (a JSON reply, an HTTP error, a delay, garbage), and every request is recorded.

It stands in for a remote model endpoint in tests of the client's own behaviour (retries,
timeouts, error typing, routing) — never for a model whose answers matter.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

__all__ = ["Reply", "ScriptedOpenAI"]


@dataclass
class Reply:
    content: str | None = None
    status: int = 200
    delay_s: float = 0.0
    raw: str | None = None
    """Send this body verbatim instead of a chat completion (garbage, broken JSON)."""


@dataclass
class ScriptedOpenAI:
    script: list[Reply] = field(default_factory=list)
    default: Callable[[dict[str, Any]], Reply] | None = None
    model: str = "scripted-model"
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v1/models")
        async def models() -> dict[str, Any]:
            return {"object": "list", "data": [{"id": self.model, "object": "model", "owned_by": "tests"}]}

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Response:
            body = await request.json()
            self.requests.append(body)
            self.headers.append(dict(request.headers))
            reply = self.script.pop(0) if self.script else (self.default(body) if self.default else Reply("{}"))
            if reply.delay_s:
                await asyncio.sleep(reply.delay_s)
            if reply.raw is not None:
                return PlainTextResponse(reply.raw, status_code=reply.status, media_type="application/json")
            if reply.status != 200:
                return JSONResponse({"error": {"message": f"scripted {reply.status}", "type": "scripted", "code": reply.status}}, status_code=reply.status)
            content = reply.content or ""
            return JSONResponse(
                {
                    "id": f"chatcmpl-{len(self.requests)}",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body.get("model", self.model),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 11, "completion_tokens": len(content.split()), "total_tokens": 11 + len(content.split())},
                }
            )

        return app


def schema_name(body: dict[str, Any]) -> str:
    return body.get("response_format", {}).get("json_schema", {}).get("name", "")


def final_schema_title(body: dict[str, Any]) -> str:
    """The output schema's title inside a tool loop's `agent_action` request (its `final` branch)."""
    schema = body.get("response_format", {}).get("json_schema", {}).get("schema", {})
    for branch in schema.get("anyOf", [schema]):
        final = branch.get("properties", {}).get("final")
        if final is not None:
            return final.get("title", "")
    return ""


def by_schema(answers: dict[str, Any]) -> Callable[[dict[str, Any]], Reply]:
    """A default behaviour answering each request with the canned answer for its schema name; a
    tool loop's turn (`agent_action`: tool call or final answer) gets the final answer at once."""

    def reply(body: dict[str, Any]) -> Reply:
        name = schema_name(body)
        if name == "agent_action":
            return Reply(json.dumps({"final": answers[final_schema_title(body)]}))
        return Reply(json.dumps(answers[name]))

    return reply
