"""Function nodes: a deterministic workflow step written in Python, declared as such in YAML.

    analyze:
      role: Checks the invoice's arithmetic, dates and the ledger evidence.
      function: flotilla.agents.document_triage.rules:analyze_invoice
      output_schema: flotilla.agents.document_triage.schemas:Analysis

Some steps are better computed than generated: arithmetic, a policy over checks, a note filled
in from verified facts. A function node runs `function(state)` (sync or async) and its return
value (a pydantic model or a JSON-able dict) is the step's output, validated against
`output_schema` when one is given. The step's span (`step <node>`) and record say what produced
the output (`produced_by: function module:name`), so nobody mistakes it for a model's answer.
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Callable
from typing import Any

from opentelemetry.trace import Status, StatusCode, Tracer
from pydantic import BaseModel

from flotilla.agents.output import OutputMismatch, OutputSchema
from flotilla.audit.errors import ConfigError
from flotilla.graphs.tool_node import step_record

__all__ = ["function_node", "FunctionOutputInvalid"]


class FunctionOutputInvalid(ConfigError):
    """A function node returned something its declared output schema does not accept."""

    code = "function_output_invalid"


def function_node(
    name: str, function: Callable[[dict[str, Any]], Any], ref: str, tracer: Tracer, *, workflow: str, output: OutputSchema | None = None
) -> Callable[..., Any]:
    """A LangGraph node running `function` over the run state as one step."""
    from flotilla.graphs.compile import StepFailed

    produced_by = f"function {ref}"

    async def node(state: dict[str, Any]) -> dict[str, Any]:
        with tracer.start_as_current_span(f"step {name}", record_exception=False, set_status_on_exception=False) as span:
            span.set_attributes({"flotilla.step.name": name, "flotilla.step.kind": "function", "flotilla.step.function": ref, "flotilla.workflow": workflow})
            started = time.perf_counter()
            try:
                value = function(dict(state))
                if inspect.isawaitable(value):
                    value = await value
                if isinstance(value, BaseModel):
                    value = value.model_dump(mode="json")
                if output is not None:
                    try:
                        value = output.dump(output.parse(json.dumps(value, ensure_ascii=False)))
                    except OutputMismatch as exc:
                        raise FunctionOutputInvalid(f"function node {name!r} ({ref}) returned output that does not match {output.name}: {exc}") from None
                if not isinstance(value, dict):
                    raise FunctionOutputInvalid(f"function node {name!r} ({ref}) must return a dict or a pydantic model, not {type(value).__name__}")
            except Exception as exc:
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                span.set_attribute("error.type", type(exc).__name__)
                record = {**step_record(name, "function", produced_by, started, None, []), "ok": False}
                record["error"] = exc.to_dict() if hasattr(exc, "to_dict") else {"type": type(exc).__name__, "code": "internal_error", "message": f"{type(exc).__name__}: {exc}"}
                raise StepFailed(name, record, exc) from exc
            return {"outputs": {name: value}, "steps": [step_record(name, "function", produced_by, started, value, [])]}

    node.__name__ = f"function_{name}"
    return node
