"""The embedded engine as an OpenAI-compatible server, shaped like vLLM's.

`GET /v1/models`, `POST /v1/chat/completions` (non-streaming). Structured output is asked
for the OpenAI way — `response_format: {"type": "json_schema", "json_schema": {"name",
"schema", "strict"}}` or `{"type": "json_object"}` — or with vLLM's extra parameters
`structured_outputs: {"json": schema}` and the older `guided_json: schema`. Errors use
OpenAI's body, `{"error": {"message", "type", "param", "code"}}`: 400 for a bad request
(invalid schema, empty messages, unsupported option), 404 for an unknown model (as vLLM),
504 when generation outlives the server's request timeout.

    app = create_model_server(get_engine(cache_dir))
    run_model_server(app, host="127.0.0.1", port=8088)
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from flotilla.agents.models._grammar import JSON_OBJECT, InvalidModelRequest
from flotilla.agents.models.base import ModelTimeout
from flotilla.agents.models.embedded import EmbeddedEngine

__all__ = ["create_model_server", "run_model_server"]


class _ApiError(Exception):
    def __init__(self, status: int, message: str, *, type_: str = "BadRequestError", param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param = status, message, type_, param


class _JsonSchemaFormat(BaseModel):
    name: str = "output"
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None
    description: str | None = None


class _ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: _JsonSchemaFormat | None = None


class _Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None


class _ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # OpenAI clients send fields we accept and ignore (user, …)

    model: str
    messages: list[_Message]
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = None
    n: int | None = 1
    stream: bool | None = False
    stop: str | list[str] | None = None
    response_format: _ResponseFormat | None = None
    structured_outputs: dict[str, Any] | None = None
    guided_json: dict[str, Any] | str | None = None


def create_model_server(
    engine: EmbeddedEngine,
    *,
    served_model_name: str | None = None,
    default_max_tokens: int = 512,
    request_timeout_s: float = 300.0,
) -> FastAPI:
    """A FastAPI app serving `engine` under `served_model_name` (default: the engine's model name)."""
    model_name = served_model_name or engine.model_name
    created = int(time.time())
    app = FastAPI(title="flotilla embedded model server", version="1")

    @app.exception_handler(_ApiError)
    async def _api_error(_: Request, exc: _ApiError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.type, exc.param)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"] if p != "body")
        return _error(400, f"{where}: {first['msg']}", "BadRequestError", where or None)

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        card = {"id": model_name, "object": "model", "created": created, "owned_by": "flotilla", "root": model_name}
        return {"object": "list", "data": [card]}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/chat/completions")
    async def chat_completions(body: _ChatCompletionRequest) -> dict[str, Any]:
        if body.model != model_name:
            raise _ApiError(404, f"The model `{body.model}` does not exist.", type_="NotFoundError", param="model")
        if body.stream:
            raise _ApiError(400, "stream=true is not supported by this server; send stream=false", param="stream")
        if body.n not in (None, 1):
            raise _ApiError(400, "only n=1 is supported", param="n")
        if body.stop:
            raise _ApiError(400, "stop sequences are not supported; the reply ends at end of turn", param="stop")
        messages = _messages(body.messages)
        schema = _schema(body)
        if schema is not None:
            try:
                await asyncio.to_thread(engine.check_schema, schema)  # compiling can take a moment
            except InvalidModelRequest as exc:
                raise _ApiError(400, exc.message, param="response_format") from None
        cancel = threading.Event()
        future = engine.submit(
            messages,
            json_schema=schema,
            max_tokens=body.max_completion_tokens or body.max_tokens or default_max_tokens,
            temperature=1.0 if body.temperature is None else body.temperature,
            top_p=1.0 if body.top_p is None else body.top_p,
            seed=body.seed,
            deadline=time.monotonic() + request_timeout_s,
            cancel=cancel,
        )
        try:
            generation = await asyncio.wrap_future(future)
        except asyncio.CancelledError:  # client went away: free the engine
            cancel.set()
            raise
        except InvalidModelRequest as exc:
            raise _ApiError(400, exc.message) from None
        except ModelTimeout as exc:
            raise _ApiError(504, exc.message, type_="TimeoutError") from None
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model_name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": generation.text},
                    "logprobs": None,
                    "finish_reason": generation.finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": generation.input_tokens,
                "completion_tokens": generation.output_tokens,
                "total_tokens": generation.input_tokens + generation.output_tokens,
            },
        }

    return app


def _error(status: int, message: str, type_: str, param: str | None) -> JSONResponse:
    return JSONResponse(
        status_code=status,
        content={"error": {"message": message, "type": type_, "param": param, "code": status}},
    )


def _messages(messages: list[_Message]) -> list[dict[str, str]]:
    if not messages:
        raise _ApiError(400, "messages must contain at least one message", param="messages")
    out = []
    for i, message in enumerate(messages):
        role = "system" if message.role == "developer" else message.role
        if role not in ("system", "user", "assistant"):
            raise _ApiError(400, f"messages[{i}].role {message.role!r} is not supported", param="messages")
        content = message.content
        if isinstance(content, list):  # content parts: only text can reach a text-only model
            if any(part.get("type") != "text" for part in content):
                raise _ApiError(400, f"messages[{i}] has non-text content parts", param="messages")
            content = "".join(str(part.get("text", "")) for part in content)
        out.append({"role": role, "content": content or ""})
    return out


def _schema(body: _ChatCompletionRequest) -> dict[str, Any] | None:
    """The JSON schema the reply must follow, from whichever of the three spellings was used."""
    asked = [
        name
        for name, value in (
            ("response_format", body.response_format and body.response_format.type != "text"),
            ("structured_outputs", body.structured_outputs),
            ("guided_json", body.guided_json is not None),
        )
        if value
    ]
    if len(asked) > 1:
        raise _ApiError(400, f"give only one of {', '.join(asked)}", param=asked[1])
    if body.structured_outputs:
        unsupported = set(body.structured_outputs) - {"json", "json_object", "disable_any_whitespace"}
        if unsupported:
            raise _ApiError(
                400, f"structured_outputs.{sorted(unsupported)[0]} is not supported (json only)", param="structured_outputs"
            )
        if body.structured_outputs.get("json") is not None:
            return _parse_schema(body.structured_outputs["json"], "structured_outputs.json")
        if body.structured_outputs.get("json_object"):
            return JSON_OBJECT
        raise _ApiError(400, "structured_outputs needs a `json` schema", param="structured_outputs")
    if body.guided_json is not None:
        return _parse_schema(body.guided_json, "guided_json")
    fmt = body.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return JSON_OBJECT
    if fmt.json_schema is None or fmt.json_schema.schema_ is None:
        raise _ApiError(400, "response_format.json_schema.schema is required", param="response_format")
    return _parse_schema(fmt.json_schema.schema_, "response_format.json_schema.schema")


def _parse_schema(value: Any, where: str) -> dict[str, Any]:
    if isinstance(value, str):  # vLLM accepts the schema as a JSON string too
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise _ApiError(400, f"{where} is not valid JSON: {exc}", param=where) from None
    if not isinstance(value, dict):
        raise _ApiError(400, f"{where} must be a JSON object", param=where)
    return value


def run_model_server(app: FastAPI, *, host: str = "127.0.0.1", port: int = 8088) -> None:
    """Serve `app` with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="info")
