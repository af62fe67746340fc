"""Attribute and event names flotilla puts on spans, beside the OTel GenAI conventions.

The runner and the rails use these names; the audit store reads them back to build run
summaries. `rail_event` is how a rail decision is attached to the span it guarded.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.trace import Span

__all__ = [
    "OPERATION",
    "RUN_ID",
    "WORKFLOW",
    "WORKFLOW_VERSION",
    "INITIATOR",
    "SENSITIVITY",
    "RUN_STATUS",
    "ESCALATED",
    "COST_USD",
    "RAIL_EVENT",
    "CONTENT_KEYS",
    "rail_event",
    "rail_attributes",
]

OPERATION = "gen_ai.operation.name"
RUN_ID = "flotilla.run_id"
WORKFLOW = "flotilla.workflow"
WORKFLOW_VERSION = "flotilla.workflow_version"
INITIATOR = "flotilla.initiator"
"""Who started the run: `cli:<user>`, `mcp:<client>`, `http:<token name>`."""
SENSITIVITY = "flotilla.sensitivity"
RUN_STATUS = "flotilla.run.status"
"""Set on the invoke_workflow span: succeeded, failed, blocked, interrupted."""
ESCALATED = "flotilla.escalated"
"""True on a chat or invoke_agent span when the step went to the frontier model."""
ESCALATION_REASON = "flotilla.escalation.reason"
COST_USD = "flotilla.cost_usd"
MODEL_LOCAL = "flotilla.model_local"
"""On a chat span: whether the model endpoint is local (on site); false counts as a remote call."""

RAIL_EVENT = "flotilla.rail"
"""Span event name of one rail decision; attributes below."""
RAIL_ENGINE = "flotilla.rail.engine"
RAIL_RULE = "flotilla.rail.rule"
RAIL_POINT = "flotilla.rail.point"
RAIL_VERDICT = "flotilla.rail.verdict"
"""`allow`, `redact` (text transformed) or `block`."""
RAIL_LATENCY_MS = "flotilla.rail.latency_ms"
RAIL_SCORE = "flotilla.rail.score"
RAIL_DETAIL = "flotilla.rail.detail"
RAIL_ENABLED = "flotilla.rail.enabled"

CONTENT_KEYS = frozenset(
    {
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "gen_ai.system_instructions",
        "gen_ai.tool.call.arguments",
        "gen_ai.tool.call.result",
        "gen_ai.prompt",
        "gen_ai.completion",
    }
)
"""Attributes that carry prompts, responses, tool arguments or results (plus any `flotilla.content.*`)."""
CONTENT_PREFIX = "flotilla.content."


def rail_attributes(
    *,
    engine: str,
    rule: str,
    point: str,
    allowed: bool,
    latency_ms: float,
    transformed: bool = False,
    score: float | None = None,
    detail: str = "",
    enabled: bool = True,
) -> dict[str, Any]:
    verdict = "block" if not allowed else ("redact" if transformed else "allow")
    attrs: dict[str, Any] = {
        RAIL_ENGINE: engine,
        RAIL_RULE: rule,
        RAIL_POINT: point,
        RAIL_VERDICT: verdict,
        RAIL_LATENCY_MS: float(latency_ms),
        RAIL_ENABLED: enabled,
    }
    if score is not None:
        attrs[RAIL_SCORE] = float(score)
    if detail:
        attrs[RAIL_DETAIL] = detail
    return attrs


def rail_event(span: Span, **decision: Any) -> None:
    """Record one rail decision on `span` (see `rail_attributes` for the keywords)."""
    span.add_event(RAIL_EVENT, rail_attributes(**decision))
