"""Attribute, event and value names flotilla puts on spans: the OTel GenAI conventions, plus `flotilla.*`.

Names follow the OpenTelemetry GenAI semantic conventions (now maintained in
open-telemetry/semantic-conventions-genai: model/gen-ai/spans.yaml, model/gen-ai/events.yaml,
docs/gen-ai/gen-ai-guardrails.md, model/mcp/common.yaml). flotilla's own `flotilla.*` names cover
what the spec does not: runs, sensitivity, cost, escalation, rail latency.

    invoke_workflow <workflow>   INTERNAL  gen_ai.workflow.name, gen_ai.conversation.id (= run id)
      invoke_agent <agent>       INTERNAL  gen_ai.agent.name, gen_ai.provider.name
        chat <model>             CLIENT    gen_ai.provider.name, gen_ai.request.model, usage …
                                 (INTERNAL for the in-process embedded engine)
        execute_tool <tool>      CLIENT    gen_ai.tool.name/type/call.id, mcp.method.name=tools/call,
                                           flotilla.tool.idempotency_key (also sent in the call's `_meta`)
      events: gen_ai.guardrail.result (one per rail decision), gen_ai.evaluation.result

The runner and the rails write these names; the audit store reads them back to build run
summaries (`rail_fields` also reads the names flotilla used before, so older records still show).
"""

from __future__ import annotations

from typing import Any

from opentelemetry.trace import Span, SpanKind

__all__ = [
    "OPERATION",
    "PROVIDER",
    "CONVERSATION_ID",
    "WORKFLOW_NAME",
    "RUN_ID",
    "WORKFLOW",
    "WORKFLOW_VERSION",
    "INITIATOR",
    "SENSITIVITY",
    "RUN_STATUS",
    "ESCALATED",
    "COST_USD",
    "RAIL_EVENT",
    "EVALUATION_EVENT",
    "CONTENT_KEYS",
    "provider_name",
    "model_span_kind",
    "rail_event",
    "rail_attributes",
    "rail_fields",
    "is_rail_event",
    "evaluation_event",
]

# -- GenAI spec names (semantic-conventions-genai) -----------------------------------------
OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
CONVERSATION_ID = "gen_ai.conversation.id"
"""The run id: every span of a run carries it, so viewers group a run as one conversation."""
WORKFLOW_NAME = "gen_ai.workflow.name"
AGENT_NAME = "gen_ai.agent.name"
TOOL_NAME = "gen_ai.tool.name"
TOOL_TYPE = "gen_ai.tool.type"
TOOL_CALL_ID = "gen_ai.tool.call.id"
MCP_METHOD = "mcp.method.name"

# -- tool calls: no duplicated side effects (tools/idempotency.py, tools/journal.py) --------
TOOL_IDEMPOTENCY_KEY = "flotilla.tool.idempotency_key"
"""On an execute_tool span: the key sent in the request `_meta` (the same when a step runs again)."""
TOOL_REPLAYED = "flotilla.tool.replayed"
"""True when the call had already finished before an interruption: its recorded result was used, nothing sent."""
TOOL_RESENT = "flotilla.tool.resent"
"""True when an interrupted call was sent again with its key (the tool or its server makes that safe)."""

# Well-known `gen_ai.provider.name` values; an OpenAI-compatible endpoint (vLLM, flotilla's own
# model server) speaks the OpenAI API, so it is `openai` (spec: docs/gen-ai/openai.md). The
# embedded engine has no spec'd value: a flotilla-namespaced custom one.
EMBEDDED_PROVIDER = "flotilla.embedded"
_PROVIDERS = {"openai-compatible": "openai", "embedded": EMBEDDED_PROVIDER}
_IN_PROCESS = frozenset({"embedded", EMBEDDED_PROVIDER, "function"})
"""Providers that answer inside this process (the embedded engine, the test FunctionModel)."""

# -- flotilla's own -------------------------------------------------------------------------
RUN_ID = "flotilla.run_id"
WORKFLOW = "flotilla.workflow"
WORKFLOW_VERSION = "flotilla.workflow_version"
INITIATOR = "flotilla.initiator"
"""Who started the run: `cli:<user>`, `mcp:<client>`, `http:<token name>`."""
SENSITIVITY = "flotilla.sensitivity"
RUN_STATUS = "flotilla.run.status"
"""Set on the invoke_workflow span: succeeded, needs_review, failed, blocked, …"""
ESCALATED = "flotilla.escalated"
"""True on a chat or invoke_agent span when the step went to the frontier model."""
ESCALATION_REASON = "flotilla.escalation.reason"
COST_USD = "flotilla.cost_usd"
MODEL_LOCAL = "flotilla.model_local"
"""On a chat span: whether the model endpoint is local (on site); false counts as a remote call."""
MODEL_ALIAS = "flotilla.model_alias"
"""The model alias a chat span called; on an invoke_agent span, the agent's first tier."""
MODEL_ADAPTER = "flotilla.model.adapter"
"""The LoRA adapter an alias uses (set where the alias is called); names the model version in metrics."""

# -- step outcome: set by `Agent.run` on its invoke_agent span; metrics and `flotilla stats` read them --
STEP_FIRST_TRY_VALID = "flotilla.step.first_try_valid"
"""The first tier's first reply matched the output schema (absent when that call failed or was skipped)."""
STEP_REPAIRS = "flotilla.step.repairs"
"""Repair calls made in the step (a reply re-asked with its validation error), over all tiers."""
STEP_VERIFIED = "flotilla.step.verified"
"""Schema-valid answers the step's checks ran on (one per tier that answered)."""
STEP_VERIFIED_PASSED = "flotilla.step.verified_passed"
STEP_TIER = "flotilla.step.tier"
"""The alias whose answer the step kept, or `needs_review` when none passed."""
STEP_ESCALATED = "flotilla.step.escalated"
"""The step went past its first tier."""
NEEDS_REVIEW_TIER = "needs_review"

# -- rail decisions: the spec's `gen_ai.guardrail.result` event (docs/gen-ai/gen-ai-guardrails.md) --
# flotilla's rails are a dedicated in-process guardrail API, so each decision is a result event on
# the span it guarded (the spec defines no internal guardrail span). Its native result is the
# verdict allow / redact / block, recorded as result.type="verdict", result.value=<verdict>.
RAIL_EVENT = "gen_ai.guardrail.result"
GUARDRAIL_COMPONENT = "gen_ai.guardrail.component.name"
GUARDRAIL_RULE = "gen_ai.guardrail.policy.rule.id"
GUARDRAIL_SOURCE = "gen_ai.guardrail.source"
"""The rail point: input, agent-output, tool-args, tool-result, output."""
GUARDRAIL_RESULT_TYPE = "gen_ai.guardrail.result.type"
GUARDRAIL_RESULT_VALUE = "gen_ai.guardrail.result.value"
"""`allow`, `redact` (text transformed) or `block`."""
GUARDRAIL_RISK_CATEGORY = "gen_ai.guardrail.risk.category"
"""Set when the rail found something (blocked or redacted): what it found, e.g. `S7`, `pii:EMAIL_ADDRESS`."""
GUARDRAIL_RISK_SCORE = "gen_ai.guardrail.risk.score"
RAIL_LATENCY_MS = "flotilla.rail.latency_ms"
RAIL_DETAIL = "flotilla.rail.detail"
"""Kept out of `gen_ai.guardrail.result.reason`, which must not carry user content; this may."""
RAIL_ENABLED = "flotilla.rail.enabled"

# Names before flotilla followed the guardrail conventions; readers still accept them.
LEGACY_RAIL_EVENT = "flotilla.rail"
_LEGACY = {
    "engine": "flotilla.rail.engine",
    "rule": "flotilla.rail.rule",
    "point": "flotilla.rail.point",
    "verdict": "flotilla.rail.verdict",
    "score": "flotilla.rail.score",
}

# -- evaluations: the spec's `gen_ai.evaluation.result` event (model/gen-ai/events.yaml) ----
EVALUATION_EVENT = "gen_ai.evaluation.result"
EVALUATION_NAME = "gen_ai.evaluation.name"
EVALUATION_SCORE = "gen_ai.evaluation.score.value"
EVALUATION_LABEL = "gen_ai.evaluation.score.label"
EVALUATION_EXPLANATION = "gen_ai.evaluation.explanation"

CONTENT_KEYS = frozenset(
    {
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "gen_ai.system_instructions",
        "gen_ai.tool.call.arguments",
        "gen_ai.tool.call.result",
        "gen_ai.guardrail.content.input.value",
        "gen_ai.guardrail.content.output.value",
        # A validation error or grounding note can quote the model's output.
        EVALUATION_EXPLANATION,
        "gen_ai.prompt",
        "gen_ai.completion",
    }
)
"""Attributes that carry prompts, responses, tool arguments or results (plus any `flotilla.content.*`)."""
CONTENT_PREFIX = "flotilla.content."


def provider_name(provider: str | None) -> str:
    """The `gen_ai.provider.name` value for a model client's `provider`."""
    if not provider:
        return "unknown"
    return _PROVIDERS.get(provider, provider)


def model_span_kind(provider: str | None) -> SpanKind:
    """CLIENT for a model in another process (vLLM, a frontier API); INTERNAL for the in-process engine."""
    return SpanKind.INTERNAL if provider in _IN_PROCESS else SpanKind.CLIENT


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
        GUARDRAIL_COMPONENT: engine,
        GUARDRAIL_RULE: rule,
        GUARDRAIL_SOURCE: point,
        GUARDRAIL_RESULT_TYPE: "verdict",
        GUARDRAIL_RESULT_VALUE: verdict,
        RAIL_LATENCY_MS: float(latency_ms),
        RAIL_ENABLED: enabled,
    }
    if verdict != "allow":
        attrs[GUARDRAIL_RISK_CATEGORY] = rule
    if score is not None:
        attrs[GUARDRAIL_RISK_SCORE] = float(score)
    if detail:
        attrs[RAIL_DETAIL] = detail
    return attrs


def rail_event(span: Span, **decision: Any) -> None:
    """Record one rail decision on `span` (see `rail_attributes` for the keywords)."""
    span.add_event(RAIL_EVENT, rail_attributes(**decision))


def is_rail_event(name: str | None) -> bool:
    return name in (RAIL_EVENT, LEGACY_RAIL_EVENT)


def rail_fields(attrs: dict[str, Any]) -> dict[str, Any] | None:
    """One recorded rail decision as plain fields (engine, rule, point, verdict, score, latency_ms,
    detail, enabled) for the audit views; None when `attrs` is not a rail decision."""
    verdict = attrs.get(GUARDRAIL_RESULT_VALUE) if attrs.get(GUARDRAIL_RESULT_TYPE) == "verdict" else None
    if verdict is None:
        verdict = attrs.get(_LEGACY["verdict"])
    if verdict is None:
        return None
    score = attrs.get(GUARDRAIL_RISK_SCORE, attrs.get(_LEGACY["score"]))
    return {
        "engine": attrs.get(GUARDRAIL_COMPONENT, attrs.get(_LEGACY["engine"])),
        "rule": attrs.get(GUARDRAIL_RULE, attrs.get(_LEGACY["rule"])),
        "point": attrs.get(GUARDRAIL_SOURCE, attrs.get(_LEGACY["point"])),
        "verdict": verdict,
        "score": score,
        "latency_ms": attrs.get(RAIL_LATENCY_MS),
        "detail": attrs.get(RAIL_DETAIL, ""),
        "enabled": attrs.get(RAIL_ENABLED, True),
    }


def evaluation_event(span: Span, name: str, *, passed: bool, explanation: str = "", score: float | None = None) -> None:
    """Record one evaluation of a GenAI output (schema validation, grounding, verification) on `span`,
    the operation it evaluated: `gen_ai.evaluation.result` with a pass/fail label."""
    if not span.is_recording():
        return
    attrs: dict[str, Any] = {
        EVALUATION_NAME: name,
        EVALUATION_SCORE: float(score if score is not None else (1.0 if passed else 0.0)),
        EVALUATION_LABEL: "pass" if passed else "fail",
    }
    if explanation:
        attrs[EVALUATION_EXPLANATION] = explanation
    span.add_event(EVALUATION_EVENT, attrs)
