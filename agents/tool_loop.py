"""The agent tool loop: the model picks a tool call or a final answer, at most `max_steps` times.

Each turn the model must answer with JSON matching one of

    {"tool": "<server.tool>", "arguments": {...}}   one branch per allowed tool, its arguments
                                                    constrained by that tool's input schema
    {"final": {...}}                                the agent's output schema

so the same loop works on the embedded model (xgrammar enforces the union) and on any
endpoint with JSON-schema structured outputs — a stock `vllm serve` included, so this is the
default. An OpenAI-compatible HTTP model whose alias says `tool_calls: native` (vLLM with a
tool parser, a frontier API) instead uses native tool calling: the allowed tools go out as
`tools=[…]` (names `server__tool`, since `.` is not allowed there), tool results come back as
`role: tool` messages, and the final answer is the message content constrained by the
output schema (`response_format`). The last turn offers
only `final`, so the loop always ends with an answer or a typed error. Tool failures — an
`isError` result, arguments the schema rejects, a tool outside the allowlist, a timeout —
go back to the model as observations and are kept in the call records — except a call that
may already have happened before an interruption (ToolCallUncertain), which ends the step.
Each call's idempotency key counts on its turn (and its place in the turn), so a step that
runs again after a crash repeats its calls with the same keys (tools/idempotency.py).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from jsonschema import validators
from opentelemetry import trace
from opentelemetry.trace import StatusCode, Tracer

from flotilla.agents.models.base import ChatRequest, ChatResult, ModelClient, ModelError
from flotilla.audit.semconv import PROVIDER, model_span_kind, provider_name
from flotilla.tools import ToolCallUncertain, ToolError, ToolInfo, ToolView

__all__ = ["run_tool_loop", "ToolLoopResult", "ToolCallRecord", "ToolLoopExhausted", "ToolRails", "action_schema"]

_ACTION_SCHEMA_NAME = "agent_action"


class ToolLoopExhausted(ModelError):
    """The model used up its steps without a final answer that matches the output schema."""

    code = "tool_loop_exhausted"


@dataclass(frozen=True, slots=True)
class ToolCallRecord:
    step: int
    tool: str
    arguments: dict[str, Any]
    is_error: bool
    """True when the tool reported failure or the call was refused (see `error_code`)."""
    error_code: str | None
    """The typed error's code when the call was refused or failed before a result."""
    observation: str
    """What the model was shown (truncated)."""
    latency_ms: float


@dataclass(slots=True)
class ToolLoopResult:
    output: dict[str, Any]
    calls: list[ToolCallRecord]
    steps: int
    """Model turns taken (tool calls + the final answer + rejected replies)."""
    model_results: list[ChatResult] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    """Allowed tools withheld from the model because their pin changed (`flotilla tools approve`)."""

    @property
    def input_tokens(self) -> int:
        return sum(r.input_tokens for r in self.model_results)

    @property
    def output_tokens(self) -> int:
        return sum(r.output_tokens for r in self.model_results)


async def run_tool_loop(
    messages: list[dict[str, str]],
    tools: ToolView,
    model: ModelClient,
    output_schema: dict[str, Any],
    *,
    max_steps: int = 6,
    tracer: Tracer | None = None,
    agent_name: str | None = None,
    max_tokens: int = 384,
    timeout_s: float | None = None,
    observation_chars: int = 2000,
    mode: Literal["auto", "native", "json", "constrained"] = "auto",
    rails: ToolRails | None = None,
    workflow: str | None = None,
) -> ToolLoopResult:
    """Run the loop and return the validated final output with the record of every tool call.

    `messages` are the agent's own (system instructions + user input); the loop adds a system
    message describing the allowed tools and the reply protocol. `mode`: `auto` follows the
    model's alias (`tool_calls: native | json` in flotilla.yaml, read from the client; `json`
    when it says nothing); `native` forces OpenAI tool calls (an HTTP client only); `json` (or
    `constrained`) forces the schema-constrained `{tool, arguments} | {final}` reply.

    `rails` (the runtime's guardrails, e.g. `guardrails.Guardrails`) checks each call's arguments
    at the `tool-args` point before the call and screens each result at `tool-result` before
    the model reads it; a `GuardrailViolation` ends the loop (and the step).
    """
    if max_steps < 1:
        raise ValueError("max_steps must be at least 1")
    tracer = tracer or trace.NoOpTracer()
    visible = await tools.tools()
    usable = [info for info in visible if not info.blocked]
    blocked = [info.name for info in visible if info.blocked]
    if blocked:  # withheld, not silently: the step's span and result say which and why
        trace.get_current_span().add_event(
            "flotilla.tools.blocked", {"flotilla.tools": blocked, "message": "tool pin changed; run `flotilla tools approve`"}
        )
    wanted = getattr(model, "tool_calls", "json") if mode == "auto" else mode
    # An alias asking for native calls that falls back to the embedded model (or a confidential
    # run rerouting it) has no raw chat call: it takes the constrained path.
    native = _openai_backend(model) if wanted == "native" else None
    if mode == "native" and native is None:
        raise ValueError(f"model client {model.name!r} is not an OpenAI-compatible HTTP client; use mode='auto'")
    if native is not None:
        return await _run_native_loop(
            messages, _Caller(tools, rails, workflow, agent_name), usable, native, model.name, output_schema,
            max_steps=max_steps, tracer=tracer, agent_name=agent_name, max_tokens=max_tokens,
            timeout_s=timeout_s, observation_chars=observation_chars, blocked=blocked,
        )
    by_name = {info.name: info for info in usable}
    final_validator = _validator(output_schema)
    conversation = _with_protocol(messages, _protocol_prompt(usable))
    result = ToolLoopResult(output={}, calls=[], steps=0, blocked=blocked)
    seen_calls: dict[str, str] = {}
    caller = _Caller(tools, rails, workflow, agent_name)

    for step in range(1, max_steps + 1):
        last = step == max_steps
        schema = action_schema([] if last else usable, output_schema)
        if last and usable:
            conversation.append({"role": "user", "content": "No more tool calls are possible: answer now with {\"final\": ...}."})
        reply = await _chat(model, conversation, schema, tracer, agent_name, max_tokens, timeout_s)
        result.model_results.append(reply)
        result.steps = step
        conversation.append({"role": "assistant", "content": reply.text})
        action, problem = _parse_action(reply.text)
        if problem:
            conversation.append({"role": "user", "content": f"That reply is not valid: {problem}. Reply with JSON only."})
            continue
        if "final" in action:
            errors = [e.message for e in final_validator.iter_errors(action["final"])]
            if not errors:
                result.output = action["final"]
                return result
            conversation.append({"role": "user", "content": f"The final answer does not match the output format: {'; '.join(errors[:3])}."})
            continue
        name, arguments = action["tool"], action.get("arguments") or {}
        key = json.dumps([name, arguments], sort_keys=True)
        if key in seen_calls:  # small models repeat themselves; the answer is already above
            conversation.append({"role": "user", "content": f"You already called {name} with these arguments; its result is above. Use it."})
            continue
        record = await caller.call(by_name, step, name, arguments, observation_chars, call_index=step)
        result.calls.append(record)
        seen_calls[key] = record.observation
        label = "TOOL ERROR" if record.is_error else "TOOL RESULT"
        conversation.append({"role": "user", "content": f"{label} {name}:\n{record.observation}"})

    raise ToolLoopExhausted(
        f"{'agent ' + repr(agent_name) + ': ' if agent_name else ''}no valid final answer within {max_steps} steps "
        f"({len(result.calls)} tool calls); raise max_steps or simplify the output schema"
    )


def action_schema(tools: list[ToolInfo], output_schema: dict[str, Any]) -> dict[str, Any]:
    """The JSON schema of one turn: a call of one of `tools` or the final answer."""
    defs: dict[str, Any] = {}
    branches = []
    for index, info in enumerate(tools):
        arguments = _hoist_defs(_bounded(_clean(info.input_schema or {"type": "object"})), f"t{index}_", defs)
        branches.append(
            {
                "type": "object",
                "properties": {"tool": {"const": info.name}, "arguments": arguments},
                "required": ["tool", "arguments"],
                "additionalProperties": False,
            }
        )
    final = _hoist_defs(_clean(output_schema), "out_", defs)
    branches.append({"type": "object", "properties": {"final": final}, "required": ["final"], "additionalProperties": False})
    schema: dict[str, Any] = branches[0] if len(branches) == 1 else {"anyOf": branches}
    if defs:
        schema = {**schema, "$defs": defs}
    return schema


# -- internals ---------------------------------------------------------------------------


async def _chat(
    model: ModelClient,
    messages: list[dict[str, str]],
    schema: dict[str, Any],
    tracer: Tracer,
    agent_name: str | None,
    max_tokens: int,
    timeout_s: float | None,
) -> ChatResult:
    request = ChatRequest(messages=list(messages), json_schema=schema, schema_name=_ACTION_SCHEMA_NAME, max_tokens=max_tokens, timeout_s=timeout_s)
    provider = getattr(model, "provider", None)
    with tracer.start_as_current_span(
        f"chat {model.name}", kind=model_span_kind(provider), record_exception=False, set_status_on_exception=False
    ) as span:
        span.set_attributes(
            {"gen_ai.operation.name": "chat", PROVIDER: provider_name(provider), "gen_ai.request.model": model.name, "gen_ai.output.type": "json"}
        )
        if agent_name:
            span.set_attribute("gen_ai.agent.name", agent_name)
        try:
            reply = await model.complete(request)
        except ModelError as exc:
            span.set_status(StatusCode.ERROR, exc.message)
            span.set_attribute("error.type", exc.code)
            raise
        span.set_attributes(_reply_attributes(reply))
        return reply


class ToolRails(Protocol):
    """What the loop needs from guardrails (flotilla.graphs.compile.RailsHook has this shape)."""

    async def check(self, point: Any, text: str, *, workflow: str | None = None, agent: str | None = None) -> str: ...


@dataclass(frozen=True, slots=True)
class _Caller:
    tools: ToolView
    rails: ToolRails | None
    workflow: str | None
    agent: str | None

    async def call(
        self,
        known: dict[str, ToolInfo],
        step: int,
        name: str,
        arguments: Any,
        limit: int,
        *,
        call_id: str | None = None,
        call_index: int | str = 0,
    ) -> ToolCallRecord:
        started = time.perf_counter()
        if not isinstance(arguments, dict):
            return ToolCallRecord(step, name, {}, True, "tool_arguments_invalid", "arguments must be a JSON object", 0.0)
        if self.rails is not None:
            from flotilla.guardrails.base import RailPoint  # noqa: PLC0415 - only when rails are wired

            checked = await self.rails.check(
                RailPoint.TOOL_ARGS, json.dumps(arguments, ensure_ascii=False), workflow=self.workflow, agent=self.agent
            )
            arguments = json.loads(checked)  # rails may redact values; the JSON stays valid
        try:
            result = await self.tools.call(name, arguments, call_id=call_id, call_index=call_index)
        except ToolCallUncertain:  # not the model's to handle: a person must check whether it happened
            raise
        except ToolError as exc:
            hint = "" if name in known else f" Available tools: {', '.join(sorted(known)) or 'none'}."
            return ToolCallRecord(step, name, arguments, True, exc.code, exc.message + hint, (time.perf_counter() - started) * 1000)
        observation = result.observation(limit)
        if self.rails is not None:
            from flotilla.guardrails.base import RailPoint  # noqa: PLC0415

            # Tool results are untrusted text: screened (and maybe quarantined) before the model reads them.
            observation = await self.rails.check(RailPoint.TOOL_RESULT, observation, workflow=self.workflow, agent=self.agent)
        return ToolCallRecord(step, name, arguments, result.is_error, None, observation, result.latency_ms)


def _parse_action(text: str) -> tuple[dict[str, Any], str]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return {}, f"it is not JSON ({exc.msg})"
    if not isinstance(value, dict):
        return {}, "it must be a JSON object"
    if "final" in value:
        return value, ""
    if isinstance(value.get("tool"), str):
        return value, ""
    return {}, 'it must be {"tool": ..., "arguments": {...}} or {"final": {...}}'


def _with_protocol(messages: list[dict[str, str]], protocol: str) -> list[dict[str, str]]:
    """The reply protocol joins the agent's system message (small models expect one, first)."""
    if messages and messages[0].get("role") == "system":
        return [{"role": "system", "content": f"{messages[0]['content']}\n\n{protocol}"}, *messages[1:]]
    return [{"role": "system", "content": protocol}, *messages]


def _protocol_prompt(tools: list[ToolInfo]) -> str:
    if not tools:
        return 'Reply with JSON only: {"final": <your answer in the output format>}.'
    lines = [
        "You can call tools to look things up before answering. Reply with JSON only, either",
        '{"tool": "<tool name>", "arguments": {...}} to call a tool (its result comes back as TOOL RESULT), or',
        '{"final": <your answer in the output format>} when you have what you need.',
        "Tools:",
    ]
    for info in tools:
        props = (info.input_schema or {}).get("properties", {})
        args = ", ".join(f"{k}: {_type_hint(v)}" for k, v in props.items()) or "none"
        lines.append(f"- {info.name}({args}): {' '.join(info.description.split())[:300]}")
    return "\n".join(lines)


def _type_hint(prop: dict[str, Any]) -> str:
    if "type" in prop:
        return str(prop["type"])
    kinds = [p.get("type") for p in prop.get("anyOf", []) if isinstance(p, dict) and p.get("type") not in (None, "null")]
    return "|".join(map(str, kinds)) or "any"


ARGUMENT_MAX_CHARS = 120
"""Strings in generated tool arguments are capped (unless the tool sets its own maxLength):
small models under a grammar otherwise spin out long strings until max_tokens cuts the JSON."""


def _bounded(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_bounded(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: (_bounded(value) if key not in ("enum", "const", "default", "examples") else value) for key, value in schema.items()}
    kinds = out.get("type")
    if (kinds == "string" or (isinstance(kinds, list) and "string" in kinds)) and "maxLength" not in out and "enum" not in out:
        out["maxLength"] = ARGUMENT_MAX_CHARS
    return out


def _clean(schema: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in schema.items() if k not in ("$schema", "$id")}


def _hoist_defs(schema: dict[str, Any], prefix: str, defs: dict[str, Any]) -> dict[str, Any]:
    """Move a sub-schema's `$defs`/`definitions` to the root under prefixed names (refs are rewritten)."""
    local = {**schema.get("definitions", {}), **schema.get("$defs", {})}
    if not local:
        return schema
    text = json.dumps({k: v for k, v in schema.items() if k not in ("$defs", "definitions")})
    defs_text = json.dumps(local)
    for old in ("#/$defs/", "#/definitions/"):
        text = text.replace(f'"{old}', f'"#/$defs/{prefix}')
        defs_text = defs_text.replace(f'"{old}', f'"#/$defs/{prefix}')
    defs.update({prefix + name: value for name, value in json.loads(defs_text).items()})
    return json.loads(text)


def _validator(schema: dict[str, Any]) -> Any:
    cls = validators.validator_for(schema)
    return cls(schema)


# -- native OpenAI tool calling (HTTP models) --------------------------------------------


class _OpenAIBackend(Protocol):
    """An OpenAI-compatible client that can make a raw chat call (OpenAICompatibleClient)."""

    model: str
    timeout_s: float

    async def chat_completion(self, kwargs: dict[str, Any]) -> tuple[Any, ChatResult]: ...


def _openai_backend(model: ModelClient) -> _OpenAIBackend | None:
    """Native tool calling for OpenAI-compatible HTTP clients; None for everything else.

    The model client contract (`ChatRequest`) has no tools, so the loop uses the client's
    `chat_completion` (the same retry policy and typed errors as its `complete`; on a
    registry's GuardedClient, the same policy, budgets and accounting too).
    """
    return model if callable(getattr(model, "chat_completion", None)) else None  # type: ignore[return-value]


def _function_name(qualified: str) -> str:
    # OpenAI function names allow [A-Za-z0-9_-]{1,64}: `ledger.find_vendor` -> `ledger__find_vendor`.
    return qualified.replace(".", "__", 1)[:64]


async def _run_native_loop(
    messages: list[dict[str, str]],
    caller: _Caller,
    usable: list[ToolInfo],
    backend: _OpenAIBackend,
    model_name: str,
    output_schema: dict[str, Any],
    *,
    max_steps: int,
    tracer: Tracer,
    agent_name: str | None,
    max_tokens: int,
    timeout_s: float | None,
    observation_chars: int,
    blocked: list[str],
) -> ToolLoopResult:
    by_function = {_function_name(info.name): info for info in usable}
    by_name = {info.name: info for info in usable}
    payload = [
        {
            "type": "function",
            "function": {
                "name": fn,
                "description": info.description[:1024],
                "parameters": _clean(info.input_schema or {"type": "object", "properties": {}}),
            },
        }
        for fn, info in by_function.items()
    ]
    final_validator = _validator(output_schema)
    conversation: list[dict[str, Any]] = [*messages]
    result = ToolLoopResult(output={}, calls=[], steps=0, blocked=blocked)
    for step in range(1, max_steps + 1):
        last = step == max_steps
        kwargs: dict[str, Any] = {
            "model": backend.model,
            "messages": conversation,
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "timeout": timeout_s or backend.timeout_s,
            "response_format": {"type": "json_schema", "json_schema": {"name": output_schema.get("title", "output"), "schema": output_schema}},
        }
        if payload:
            kwargs["tools"] = payload
            kwargs["tool_choice"] = "none" if last else "auto"
        message, reply = await _native_chat(backend, model_name, kwargs, tracer, agent_name)
        result.model_results.append(reply)
        result.steps = step
        tool_calls = list(getattr(message, "tool_calls", None) or [])
        if not tool_calls:
            conversation.append({"role": "assistant", "content": message.content or ""})
            try:
                final = json.loads(message.content or "")
            except json.JSONDecodeError as exc:
                conversation.append({"role": "user", "content": f"That reply is not JSON ({exc.msg}). Answer with JSON only."})
                continue
            errors = [e.message for e in final_validator.iter_errors(final)]
            if not errors:
                result.output = final
                return result
            conversation.append({"role": "user", "content": f"The answer does not match the output format: {'; '.join(errors[:3])}."})
            continue
        conversation.append(
            {
                "role": "assistant",
                "content": message.content,
                "tool_calls": [
                    {"id": c.id, "type": "function", "function": {"name": c.function.name, "arguments": c.function.arguments}}
                    for c in tool_calls
                ],
            }
        )
        for index, call in enumerate(tool_calls):
            info = by_function.get(call.function.name)
            name = info.name if info is not None else call.function.name.replace("__", ".", 1)
            try:
                arguments = json.loads(call.function.arguments or "{}")
            except json.JSONDecodeError as exc:
                arguments = None
                record = ToolCallRecord(step, name, {}, True, "tool_arguments_invalid", f"arguments are not JSON ({exc.msg})", 0.0)
            if arguments is not None:
                record = await caller.call(by_name, step, name, arguments, observation_chars, call_id=call.id, call_index=f"{step}.{index}")
            result.calls.append(record)
            conversation.append({"role": "tool", "tool_call_id": call.id, "content": record.observation})
    raise ToolLoopExhausted(
        f"{'agent ' + repr(agent_name) + ': ' if agent_name else ''}no valid final answer within {max_steps} steps "
        f"({len(result.calls)} tool calls); raise max_steps or simplify the output schema"
    )


async def _native_chat(
    backend: _OpenAIBackend, model_name: str, kwargs: dict[str, Any], tracer: Tracer, agent_name: str | None
) -> tuple[Any, ChatResult]:
    provider = getattr(backend, "provider", "openai-compatible")  # native tool calling is HTTP only
    with tracer.start_as_current_span(
        f"chat {model_name}", kind=model_span_kind(provider), record_exception=False, set_status_on_exception=False
    ) as span:
        span.set_attributes(
            {"gen_ai.operation.name": "chat", PROVIDER: provider_name(provider), "gen_ai.request.model": model_name, "gen_ai.output.type": "json"}
        )
        if agent_name:
            span.set_attribute("gen_ai.agent.name", agent_name)
        try:
            message, reply = await backend.chat_completion(kwargs)
        except ModelError as error:
            span.set_status(StatusCode.ERROR, error.message)
            span.set_attribute("error.type", error.code)
            raise
        span.set_attributes(_reply_attributes(reply))
        return message, reply


def _reply_attributes(reply: ChatResult) -> dict[str, Any]:
    """What a chat span records of the reply, on both the constrained and the native path."""
    return {
        PROVIDER: provider_name(reply.provider),
        "gen_ai.response.model": reply.model,
        "gen_ai.usage.input_tokens": reply.input_tokens,
        "gen_ai.usage.output_tokens": reply.output_tokens,
        "gen_ai.response.finish_reasons": [reply.finish_reason],
        "flotilla.model_local": reply.local,
    }
