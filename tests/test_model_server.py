"""`serve-model`'s app on a real port, driven by the `openai` package — the path production takes with vLLM."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import jsonschema
import openai
import pytest
import uvicorn

from flotilla.agents.models.base import ChatRequest
from flotilla.agents.models.embedded import EmbeddedEngine
from flotilla.agents.models.openai_compat import OpenAICompatibleClient
from flotilla.agents.models.server import create_model_server

pytestmark = pytest.mark.model

MODEL = "SmolLM2-135M-Instruct"
DECISION = {
    "type": "object",
    "properties": {
        "decision": {"type": "string", "enum": ["approve", "hold", "reject"]},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
    },
    "required": ["decision", "confidence"],
}
ASK = [{"role": "user", "content": "An invoice of 1712 GBP matches its purchase order. Decide: approve, hold or reject."}]


@pytest.fixture(scope="module")
def base_url(embedded_engine: EmbeddedEngine) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_model_server(embedded_engine), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "model server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=300)


def test_lists_the_model(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_json_schema_response_format_gives_valid_json_and_usage(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL,
        messages=ASK,
        temperature=0,
        max_tokens=60,
        response_format={"type": "json_schema", "json_schema": {"name": "decision", "schema": DECISION, "strict": True}},
    )
    choice = reply.choices[0]
    jsonschema.validate(json.loads(choice.message.content), DECISION)
    assert choice.finish_reason == "stop" and reply.model == MODEL
    assert reply.usage.prompt_tokens > 10 and reply.usage.completion_tokens > 3
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


@pytest.mark.parametrize(
    "extra",
    [{"structured_outputs": {"json": DECISION}}, {"guided_json": DECISION}],
    ids=["structured_outputs", "guided_json"],
)
def test_vllm_extra_parameters_constrain_too(client: openai.OpenAI, extra: dict) -> None:
    reply = client.chat.completions.create(model=MODEL, messages=ASK, temperature=0, max_completion_tokens=60, extra_body=extra)
    jsonschema.validate(json.loads(reply.choices[0].message.content), DECISION)


def test_json_object_mode(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=ASK, temperature=0, max_tokens=80, response_format={"type": "json_object"}
    )
    if reply.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(reply.choices[0].message.content), dict)
    else:  # an unbounded object may run out of tokens; what there is must be an object's start
        assert reply.choices[0].message.content.startswith("{")


def test_invalid_schema_is_a_400(client: openai.OpenAI) -> None:
    bad = {"type": "object", "properties": {"a": {"type": "no-such-type"}}}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=MODEL, messages=ASK, response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": bad}}
        )
    assert caught.value.status_code == 400
    assert "invalid JSON schema" in caught.value.body["message"]


def test_unknown_model_is_a_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="gpt-17", messages=ASK)


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"model": MODEL, "messages": []}, "at least one message"),
        ({"model": MODEL, "messages": ASK, "stream": True}, "stream"),
        ({"model": MODEL, "messages": ASK, "max_tokens": 0}, "max_tokens"),
        ({"model": MODEL}, "messages"),
    ],
)
def test_bad_requests_get_openai_error_bodies(base_url: str, body: dict, fragment: str) -> None:
    response = httpx.post(f"{base_url}/chat/completions", json=body, timeout=60)
    assert response.status_code == 400
    error = response.json()["error"]
    assert fragment in error["message"] and error["type"] == "BadRequestError" and error["code"] == 400


async def test_flotilla_http_client_against_the_server(base_url: str) -> None:
    """The same client flotilla uses for vLLM, pointed at serve-model."""
    model = OpenAICompatibleClient(base_url=base_url, model=MODEL, timeout_s=300, max_retries=0)
    result = await model.complete(ChatRequest(messages=ASK, json_schema=DECISION, max_tokens=60))
    jsonschema.validate(json.loads(result.text), DECISION)
    assert result.input_tokens > 10 and result.output_tokens > 3
