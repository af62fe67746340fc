"""Tool nodes: a workflow step that calls one MCP tool directly, with arguments from the state.

    vendor:
      role: Looks the vendor up in the ledger.
      tool: ledger.find_vendor
      arguments: {name: "{extract.vendor}"}
      on_error: continue

No model plans the call. The call takes the same road as one from the agent tool loop: the
node's allowlist is its one tool (tools/hub.py ToolView: allowlist, description pin, input
schema), the tool rails check the arguments before and screen the result after, and the hub's
`execute_tool` span records it, inside the step's own `step <node>` span. The result — parsed
JSON where it is JSON — enters the state as the node's output, like an agent's.

Argument references: a string that is exactly `"{node.field[.field…]}"` is that value from the
state, whatever its type (`{input}` is the run's input); a longer string with references in it
is filled in as text. A reference to a missing (null) value drops the argument, so the tool's
own schema says whether it was optional.

No duplicated side effects: the call carries an idempotency key derived from the run, this step
and the call (tools/idempotency.py), so the step running again after a crash sends the same
key. A side-effecting call that was sent but never recorded a result, to a tool that is not
read-only or idempotent and whose server does not honour keys, is not sent again: the run ends
`needs_review` naming the call (`UncertainToolCall`), whatever the node's `on_error` says.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import Status, StatusCode, Tracer

from flotilla.agents.cascade import NeedsReview
from flotilla.audit.errors import FlotillaError
from flotilla.graphs.spec import AgentSpec
from flotilla.guardrails.base import RailPoint

if TYPE_CHECKING:
    from flotilla.graphs.compile import RailsHook
    from flotilla.tools import ToolHub

__all__ = ["tool_node", "resolve_arguments", "argument_references", "step_record", "INPUT_REFERENCE", "UncertainToolCall"]

INPUT_REFERENCE = "input"
_REFERENCE = re.compile(r"\{([A-Za-z_][\w-]*(?:\.[\w-]+)*)\}")
_MISSING = object()


def argument_references(value: Any) -> Iterable[tuple[str, ...]]:
    """Every `{node.field…}` reference in an argument mapping, as path tuples."""
    if isinstance(value, str):
        for match in _REFERENCE.finditer(value):
            yield tuple(match.group(1).split("."))
    elif isinstance(value, dict):
        for item in value.values():
            yield from argument_references(item)
    elif isinstance(value, list):
        for item in value:
            yield from argument_references(item)


def _lookup(path: tuple[str, ...], state: dict[str, Any]) -> Any:
    if path == (INPUT_REFERENCE,):
        return state.get("input")
    value: Any = (state.get("outputs") or {}).get(path[0])
    for part in path[1:]:
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def _resolve(value: Any, state: dict[str, Any]) -> Any:
    if isinstance(value, str):
        whole = _REFERENCE.fullmatch(value)
        if whole:
            found = _lookup(tuple(whole.group(1).split(".")), state)
            return _MISSING if found is None else found
        parts: list[str] = []
        for match in _REFERENCE.finditer(value):
            found = _lookup(tuple(match.group(1).split(".")), state)
            if found is None:
                return _MISSING  # half a sentence is worse than none: the argument is dropped
            parts.append(found if isinstance(found, str) else json.dumps(found, ensure_ascii=False))
        filled = iter(parts)
        return _REFERENCE.sub(lambda _: next(filled), value)
    if isinstance(value, dict):
        resolved = {key: _resolve(item, state) for key, item in value.items()}
        return {key: item for key, item in resolved.items() if item is not _MISSING}
    if isinstance(value, list):
        return [item for item in (_resolve(item, state) for item in value) if item is not _MISSING]
    return value


def resolve_arguments(arguments: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    """The tool call's arguments: references filled in from the state, missing values dropped."""
    return _resolve(arguments, state)


class UncertainToolCall(NeedsReview):
    """A step stopped on a tool call that may have happened (tools.ToolCallUncertain): not a
    failure of flotilla, but something a person must check, so the run ends `needs_review`."""

    def __init__(self, step: str, cause: FlotillaError) -> None:
        FlotillaError.__init__(self, f"step {step!r}: {cause.message}")
        self.step, self.attempts, self.cause_code = step, [], cause.code
        self._reason = cause.message

    @property
    def reasons(self) -> list[str]:
        return [self._reason]


def _parsed(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {"text": text}
    return value if isinstance(value, dict) else {"result": value}


def step_record(name: str, kind: str, produced_by: str, started: float, output: Any, notes: list[str]) -> dict[str, Any]:
    """The step record of a node that calls no model (keys as an agent step's, tokens zero)."""
    return {
        "agent": name,
        "node_kind": kind,
        "produced_by": produced_by,
        "model": None,
        "alias": None,
        "fallback": False,
        "ok": True,
        "latency_ms": round((time.perf_counter() - started) * 1000, 1),
        "input_tokens": 0,
        "output_tokens": 0,
        "output": output,
        "repaired": False,
        "notes": notes,
    }


def tool_node(
    name: str, spec: AgentSpec, hub: ToolHub | None, tracer: Tracer, *, workflow: str, rails: RailsHook | None = None
) -> Callable[..., Any]:
    """A LangGraph node calling `spec.tool` once with `spec.arguments` filled in from the state."""
    from flotilla.graphs.compile import StepFailed
    from flotilla.tools import ToolCallUncertain, ToolError, ToolServerUnavailable

    assert spec.tool is not None
    tool = spec.tool
    produced_by = f"tool {tool}"

    async def node(state: dict[str, Any]) -> dict[str, Any]:
        with tracer.start_as_current_span(f"step {name}", record_exception=False, set_status_on_exception=False) as span:
            span.set_attributes(
                {"flotilla.step.name": name, "flotilla.step.kind": "tool", "flotilla.workflow": workflow, "gen_ai.tool.name": tool}
            )
            started = time.perf_counter()
            arguments = resolve_arguments(spec.arguments, state)
            error: ToolError | None = None
            output: dict[str, Any] = {}
            try:
                if hub is None:
                    raise ToolServerUnavailable(f"tool node {name!r} calls {tool}, but this runtime has no MCP servers configured")
                if rails is not None:
                    arguments = json.loads(await rails.check(RailPoint.TOOL_ARGS, json.dumps(arguments, ensure_ascii=False), workflow=workflow, agent=name))
                result = await hub.view([tool]).call(tool, arguments, timeout_s=spec.timeout_s)
                text = json.dumps(result.structured, ensure_ascii=False) if result.structured is not None else result.text
                if rails is not None:  # tool results are untrusted text: screened before the state holds them
                    text = await rails.check(RailPoint.TOOL_RESULT, text, workflow=workflow, agent=name)
                if result.is_error:
                    error = ToolError(f"{tool} reported an error: {text[:300]}")
                else:
                    output = _parsed(text)
            except ToolCallUncertain as exc:  # never `on_error: continue`: a person must check the tool's side
                span.set_status(Status(StatusCode.ERROR, exc.message))
                span.set_attribute("error.type", exc.code)
                record = {**step_record(name, "tool", produced_by, started, None, []), "ok": False, "arguments": arguments, "error": exc.to_dict()}
                raise StepFailed(name, record, UncertainToolCall(name, exc)) from exc
            except ToolError as exc:
                error = exc
            except Exception as exc:  # a rail said no, or a bug: the step fails with a typed record
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                span.set_attribute("error.type", type(exc).__name__)
                record = {**step_record(name, "tool", produced_by, started, None, []), "ok": False, "arguments": arguments}
                record["error"] = exc.to_dict() if hasattr(exc, "to_dict") else {"type": type(exc).__name__, "code": "internal_error", "message": str(exc)}
                raise StepFailed(name, record, exc) from exc
            notes: list[str] = []
            if error is not None:
                span.set_attribute("error.type", error.code)
                if spec.on_error == "fail":
                    span.set_status(Status(StatusCode.ERROR, error.message))
                    record = {**step_record(name, "tool", produced_by, started, None, []), "ok": False, "arguments": arguments, "error": error.to_dict()}
                    raise StepFailed(name, record, error)
                output = {"error": {"code": error.code, "message": error.message}}
                notes.append(f"{tool} failed ({error.code}); kept as this step's output (on_error: continue)")
            record = {**step_record(name, "tool", produced_by, started, output, notes), "arguments": arguments}
            return {"outputs": {name: output}, "steps": [record]}

    node.__name__ = f"tool_{name}"
    return node
