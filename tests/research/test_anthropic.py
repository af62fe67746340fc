"""The Anthropic adapter against a scripted Messages API on 127.0.0.1 (the real `anthropic` SDK on the client side)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from flotilla.agents.models.base import ChatRequest, ModelUnavailable
from flotilla.agents.models.policy import RemoteModelRefused, RunPolicy, run_scope
from flotilla.agents.models.registry import ModelEndpoint, ModelRegistry
from flotilla.agents.models.testing import FunctionModel
from tests.support.servers import serve_app


def messages_api(requests: list[dict[str, Any]], status: int = 200) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/messages")
    async def messages(request: Request) -> JSONResponse:
        body = await request.json()
        requests.append(body)
        if status != 200:
            return JSONResponse({"type": "error", "error": {"type": "api_error", "message": "scripted"}}, status_code=status)
        tool = body["tool_choice"]["name"]
        return JSONResponse(
            {
                "id": "msg_1", "type": "message", "role": "assistant", "model": body["model"],
                "content": [{"type": "tool_use", "id": "toolu_1", "name": tool, "input": {"sub_questions": [{"question": "q", "specialist": "ledger"}]}}],
                "stop_reason": "tool_use", "stop_sequence": None, "usage": {"input_tokens": 12, "output_tokens": 7},
            }
        )

    return app


def registry(url: str) -> ModelRegistry:
    endpoint = ModelEndpoint(provider="anthropic", base_url=url, model="claude-test", max_retries=0)
    return ModelRegistry({"frontier": endpoint}, embedded=lambda: FunctionModel(lambda r: "{}"), http_client=None)


REQUEST = ChatRequest(
    messages=[{"role": "system", "content": "Plan."}, {"role": "user", "content": "Question?"}],
    json_schema={"type": "object", "properties": {"sub_questions": {"type": "array"}}, "required": ["sub_questions"]},
    schema_name="Plan",
)


async def test_structured_output_through_a_forced_tool_call() -> None:
    requests: list[dict[str, Any]] = []
    with serve_app(messages_api(requests)) as url:
        binding = registry(url).resolve("frontier")
        result = await binding.client.complete(REQUEST)
    assert binding.local is False and result.local is False and result.provider == "anthropic"
    assert json.loads(result.text) == {"sub_questions": [{"question": "q", "specialist": "ledger"}]}
    assert (result.input_tokens, result.output_tokens) == (12, 7)
    [body] = requests
    assert body["system"] == "Plan." and body["messages"] == [{"role": "user", "content": "Question?"}]
    assert body["tool_choice"] == {"type": "tool", "name": "Plan"} and body["tools"][0]["input_schema"] == REQUEST.json_schema


async def test_server_errors_are_typed_and_confidential_runs_never_send() -> None:
    requests: list[dict[str, Any]] = []
    with serve_app(messages_api(requests, status=500)) as url:
        client = registry(url).resolve("frontier").client
        with pytest.raises(ModelUnavailable, match="HTTP 500"):
            await client.complete(REQUEST)
        sent = len(requests)
        with run_scope(RunPolicy(confidential=True, reason="run flag")), pytest.raises(RemoteModelRefused, match="run flag"):
            await client.complete(REQUEST)
    assert sent == 1 and len(requests) == 1
