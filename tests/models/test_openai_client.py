"""The OpenAI-compatible client against a real local HTTP server that misbehaves on cue."""

from __future__ import annotations

import json
import time

import pytest

from flotilla.agents.models.base import ChatRequest, ModelBadResponse, ModelTimeout, ModelUnavailable
from flotilla.agents.models.openai_compat import OpenAICompatibleClient
from tests.support.scripted_openai import Reply, ScriptedOpenAI
from tests.support.servers import free_port, serve_app

SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
REQUEST = ChatRequest(messages=[{"role": "user", "content": "hi"}], json_schema=SCHEMA, schema_name="Ok")


async def complete(url: str, request: ChatRequest = REQUEST, **options):
    client = OpenAICompatibleClient(base_url=f"{url}/v1", model="specialist", backoff_s=0.01, **options)
    try:
        return await client.complete(request)
    finally:
        await client.aclose()


async def test_structured_output_request_and_usage() -> None:
    server = ScriptedOpenAI([Reply('{"ok": true}')])
    with serve_app(server.app()) as url:
        result = await complete(url)
    assert json.loads(result.text) == {"ok": True}
    assert (result.input_tokens, result.output_tokens, result.provider) == (11, 2, "openai-compatible")
    [body] = server.requests
    assert body["model"] == "specialist"
    assert body["response_format"] == {"type": "json_schema", "json_schema": {"name": "Ok", "schema": SCHEMA, "strict": True}}
    assert body["messages"] and body["max_tokens"] and "timeout" not in body and "extra_body" not in body


async def test_the_api_key_is_sent_as_a_bearer_token() -> None:
    server = ScriptedOpenAI([Reply('{"ok": true}')])
    with serve_app(server.app()) as url:
        await complete(url, api_key="test-key-123")
    [headers] = server.headers
    assert headers["authorization"] == "Bearer test-key-123"


@pytest.mark.parametrize("status", [500, 502, 503, 429])
async def test_retries_on_5xx_and_429_then_succeeds(status: int) -> None:
    server = ScriptedOpenAI([Reply(status=status), Reply(status=status), Reply('{"ok": true}')])
    with serve_app(server.app()) as url:
        result = await complete(url, max_retries=3)
    assert json.loads(result.text) == {"ok": True}
    assert len(server.requests) == 3


async def test_gives_up_after_max_retries_with_a_typed_error() -> None:
    server = ScriptedOpenAI(default=lambda body: Reply(status=503))
    with serve_app(server.app()) as url:
        with pytest.raises(ModelUnavailable, match="HTTP 503"):
            await complete(url, max_retries=2)
    assert len(server.requests) == 3


@pytest.mark.parametrize("status", [400, 401, 404, 422])
async def test_never_retries_other_4xx(status: int) -> None:
    server = ScriptedOpenAI(default=lambda body: Reply(status=status))
    with serve_app(server.app()) as url:
        with pytest.raises(ModelBadResponse, match=f"HTTP {status}"):
            await complete(url, max_retries=3)
    assert len(server.requests) == 1


async def test_slow_server_times_out_within_the_deadline() -> None:
    server = ScriptedOpenAI(default=lambda body: Reply('{"ok": true}', delay_s=5))
    with serve_app(server.app()) as url:
        started = time.monotonic()
        with pytest.raises(ModelTimeout, match="did not answer within 0.5s"):
            await complete(url, ChatRequest(messages=REQUEST.messages, timeout_s=0.5), max_retries=3)
        assert time.monotonic() - started < 2.5


@pytest.mark.parametrize("raw", ["<html>oops</html>", '{"choices": []}', '{"id": 1}'])
async def test_garbage_body_is_a_bad_response(raw: str) -> None:
    server = ScriptedOpenAI(default=lambda body: Reply(raw=raw))
    with serve_app(server.app()) as url:
        with pytest.raises(ModelBadResponse):
            await complete(url)


async def test_server_down_is_unavailable_after_retries() -> None:
    port = free_port()  # nothing listens here
    started = time.monotonic()
    with pytest.raises(ModelUnavailable, match="cannot reach"):
        await complete(f"http://127.0.0.1:{port}", max_retries=2)
    assert time.monotonic() - started < 5


def test_plain_json_requests_skip_the_sdk_transform_and_others_do_not() -> None:
    from flotilla.agents.models.openai_compat import _plain_body

    schema = {"response_format": {"type": "json_schema", "json_schema": {"name": "Ok", "schema": SCHEMA, "strict": True}}}
    kwargs = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "timeout": 3.0, "extra_body": schema}
    assert _plain_body(kwargs) == {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, **schema}
    assert _plain_body({**kwargs, "stream": True}) is None  # streaming goes through `create`
    assert _plain_body({**kwargs, "extra_headers": {"x": "y"}}) is None
    assert _plain_body({**kwargs, "messages": [("user", "hi")]}) is None  # not plain JSON: the SDK's transform handles it


def test_a_plain_reply_is_read_directly_and_one_with_tool_calls_as_the_sdk_reads_it() -> None:
    from openai.types.chat import ChatCompletion

    from flotilla.agents.models.chat_http import PlainReply, reply_of

    plain = {"model": "m", "choices": [{"index": 0, "message": {"role": "assistant", "content": "{}"}, "finish_reason": "stop"}],
             "usage": {"prompt_tokens": 3, "completion_tokens": 1}}
    reply = reply_of(plain)
    assert isinstance(reply, PlainReply)
    assert (reply.choices[0].message.content, reply.choices[0].finish_reason, reply.usage.prompt_tokens, reply.model) == ("{}", "stop", 3, "m")
    call = {"id": "c1", "type": "function", "function": {"name": "ledger__find_vendor", "arguments": "{}"}}
    with_tools = reply_of({**plain, "choices": [{"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": [call]}, "finish_reason": "tool_calls"}]})
    assert isinstance(with_tools, ChatCompletion) and with_tools.choices[0].message.tool_calls[0].function.name == "ledger__find_vendor"
