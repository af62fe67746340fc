"""An agent step: role + instructions + output schema + model binding.

One step asks its model for JSON constrained by the output schema, validates the reply with
pydantic, asks once more with the validation error if it does not fit, then verifies the
answer (agents/verify.py). An answer that still does not fit, or fails a check, goes to the
agent's next model tier (agents/cascade.py); when none passes, the step raises `NeedsReview`.
`timeout_s` bounds the whole step: repair, tiers and all. Every model call is a GenAI `chat` span.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Callable

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode, Tracer

from flotilla.agents.cascade import Attempt, NeedsReview, escalation_message, skip_reason
from flotilla.agents.models.base import ChatRequest, ChatResult, ModelError, ModelTimeout
from flotilla.agents.models.policy import BudgetExhausted, RemoteModelRefused, escalating
from flotilla.agents.models.registry import Binding
from flotilla.agents.output import OutputMismatch, OutputSchema
from flotilla.agents.verify import Verifier, failures
from flotilla.audit import semconv as sc
from flotilla.audit.semconv import PROVIDER, evaluation_event, model_span_kind, provider_name
from flotilla.audit.semconv import MODEL_ADAPTER

if TYPE_CHECKING:
    from flotilla.agents.tool_loop import ToolRails
    from flotilla.tools import ToolView

__all__ = ["Agent", "StepResult", "AgentOutputInvalid", "NeedsReview", "ContextHook", "PolicyHook"]

OUTPUT_SCHEMA_EVALUATION = "output_schema"
"""`gen_ai.evaluation.name` of the check that a reply matches the agent's output schema."""

ContextHook = Callable[[dict[str, Any]], dict[str, Any]]
"""Deterministic facts computed from the run state, shown to the model beside the input."""
PolicyHook = Callable[[Any, dict[str, Any]], tuple[Any, list[str]]]
"""Business invariants applied to the validated output; returns (output, notes on what changed)."""


class AgentOutputInvalid(ModelError):
    """The model's reply did not match the agent's output schema, even after one repair."""

    code = "agent_output_invalid"


@dataclass(frozen=True, slots=True)
class StepResult:
    output: dict[str, Any]
    model: str
    input_tokens: int
    output_tokens: int
    latency_ms: float
    repaired: bool
    notes: list[str] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    tier: str | None = None
    """The model alias that gave the answer."""
    attempts: list[dict[str, Any]] = field(default_factory=list)
    """Each tier tried (or skipped), in order: `{model, ok, reasons}`."""
    verification: list[dict[str, Any]] = field(default_factory=list)
    """The answer's verdicts: `{check, passed, message}`."""
    answer: dict[str, Any] | None = None
    """The model's answer before the policy hook corrected it (checks see it as `state["answer"]`)."""


@dataclass(slots=True)
class Agent:
    name: str
    role: str
    instructions: str
    output: OutputSchema
    binding: Binding
    reads: tuple[str, ...] | None = None
    """Earlier agents whose outputs this one sees; None means all of them."""
    include_input: bool = True
    timeout_s: float | None = None
    max_tokens: int = 384
    context: ContextHook | None = None
    policy: PolicyHook | None = None
    tools: tuple[str, ...] = ()
    """The allowlist this agent was declared with (`server.tool`, globs)."""
    tool_view: ToolView | None = None
    """The MCP tools it may see and call; set when the runtime has a tool hub."""
    max_tool_steps: int = 4
    escalation: tuple[Binding, ...] = ()
    """Further model tiers, in order, after `binding` (`model: [a, b, c]` in YAML)."""
    verifier: Verifier | None = None
    """The checks every answer must pass; None: the built-in ones (agents/verify.py)."""

    @property
    def tiers(self) -> tuple[Binding, ...]:
        return (self.binding, *self.escalation)

    @property
    def json_schema(self) -> dict[str, Any]:
        return self.output.json_schema

    @property
    def version(self) -> str:
        """Content hash of what defines this agent's behaviour: instructions and schema."""
        return _content_hash(self.instructions, json.dumps(self.json_schema, sort_keys=True))

    def model_attributes(self) -> dict[str, Any]:
        """The model this agent is bound to, as its invoke_agent span names it (spec: provider + request model)."""
        client = self.binding.client
        return {PROVIDER: provider_name(getattr(client, "provider", None)), "gen_ai.request.model": client.name}

    def messages(self, state: dict[str, Any]) -> list[dict[str, str]]:
        parts: list[str] = []
        if self.include_input:
            parts.append(f"INPUT:\n{state.get('input', '')}")
        outputs: dict[str, Any] = state.get("outputs") or {}
        for name, output in outputs.items():
            if self.reads is None or name in self.reads:
                parts.append(f"{name.upper()} RESULT:\n{json.dumps(output, ensure_ascii=False)}")
        if self.context is not None:
            parts.append(f"FACTS:\n{json.dumps(self.context(state), ensure_ascii=False)}")
        return [
            {"role": "system", "content": self.instructions.strip()},
            {"role": "user", "content": "\n\n".join(parts)},
        ]

    async def run(self, state: dict[str, Any], tracer: Tracer, *, rails: ToolRails | None = None, workflow: str | None = None) -> StepResult:
        """The first answer, tier by tier, that passes validation and verification; else NeedsReview."""
        verifier = self.verifier or Verifier.defaults(self.json_schema)
        attempts: list[Attempt] = []
        reasons: list[str] = []
        quoted: str | None = None
        started = time.perf_counter()
        deadline = time.monotonic() + self.timeout_s if self.timeout_s else None
        lone = len(self.tiers) == 1
        tally = _StepTally()
        try:
            async with asyncio.timeout(self.timeout_s):
                for tier in self.tiers:
                    if skip := skip_reason(tier, only_tier=lone):
                        attempts.append(Attempt(tier.alias, ok=False, reasons=[skip], skipped=True))
                        continue
                    attempts.append(attempt := Attempt(tier.alias, ok=False))
                    tally.tiers_tried += 1
                    shown = [escalation_message(reasons)] if reasons else []
                    marked = escalating(f"{self.name}: {reasons[0]}") if reasons else contextlib.nullcontext()
                    try:
                        with marked:
                            result = await self._answer(tier, state, tracer, shown, deadline, rails=rails, workflow=workflow, tally=tally)
                    except (BudgetExhausted, RemoteModelRefused):
                        raise  # the run's policy said no: not this tier's failure
                    except ModelError as exc:
                        if lone and not isinstance(exc, (AgentOutputInvalid, ModelTimeout)):
                            raise  # one tier, an endpoint error: the run fails with it, typed, as ever
                        attempt.reasons = reasons = [f"{exc.code}: {exc.message}"]
                        quoted = exc.quoted or quoted
                        continue
                    verdicts = verifier.verify(result.output, {**state, "answer": result.answer}, trace.get_current_span())
                    attempt.reasons = reasons = failures(verdicts)
                    tally.verified += 1
                    if not reasons:
                        attempt.ok = True
                        tally.verified_passed += 1
                        tally.record(trace.get_current_span(), tier.alias, escalated=tier is not self.binding)
                        return replace(
                            result,
                            latency_ms=(time.perf_counter() - started) * 1000,
                            tier=tier.alias,
                            attempts=[a.to_dict() for a in attempts],
                            verification=[v.to_dict() for v in verdicts],
                        )
        except TimeoutError:
            why = f"the step deadline of {self.timeout_s:g}s passed"
            if attempts and not attempts[-1].skipped and not attempts[-1].reasons:
                attempts[-1].reasons = [why]
            else:
                attempts.append(Attempt("deadline", ok=False, reasons=[why]))
        tally.record(trace.get_current_span(), sc.NEEDS_REVIEW_TIER, escalated=any(a.model != self.binding.alias and not a.skipped for a in attempts))
        raise NeedsReview(self.name, attempts, quoted=quoted)

    async def _answer(
        self,
        tier: Binding,
        state: dict[str, Any],
        tracer: Tracer,
        shown: list[dict[str, str]],
        deadline: float | None,
        *,
        rails: ToolRails | None,
        workflow: str | None,
        tally: _StepTally | None = None,
    ) -> StepResult:
        """One tier's answer, schema-valid (after one repair, or at the end of its tool loop) and through the policy hook."""
        tally = tally or _StepTally()
        messages = [*self.messages(state), *shown]
        started = time.perf_counter()
        if self.tools and self.tool_view is not None:
            output, reply = await self._tool_loop_reply(tier, messages, tracer, deadline, rails=rails, workflow=workflow, tally=tally)
        else:
            output, reply = await self._repaired_reply(tier, messages, tracer, deadline, tally)
        output, policy_notes = self._apply_policy(output, state)
        return replace(
            reply,
            output=self.output.dump(output),
            answer=reply.output,  # as the model gave it, before the policy hook
            latency_ms=(time.perf_counter() - started) * 1000,
            notes=[*reply.notes, *policy_notes],
        )

    async def _repaired_reply(self, tier: Binding, messages: list[dict[str, str]], tracer: Tracer, deadline: float | None, tally: _StepTally) -> tuple[Any, StepResult]:
        """The model's output, valid against the schema after at most one repair, and its reply (output dumped)."""
        first, output, problem = await self._call(tier, messages, tracer, deadline)
        results = [first]
        tally.reply(valid=not problem, adapter=first.extra.get("adapter"))
        if problem:
            tally.repairs += 1
            # One repair: show the model its reply and what was wrong with it.
            messages = [
                *messages,
                {"role": "assistant", "content": first.text},
                {"role": "user", "content": f"That reply is not valid: {problem}. Answer again with valid JSON only."},
            ]
            second, output, problem = await self._call(tier, messages, tracer, deadline)
            results.append(second)
            if problem:
                raise AgentOutputInvalid(
                    f"agent {self.name!r}: the model's output does not match {self.output.name} after one repair: {problem}",
                    quoted=self._quoted(second.text),
                )
        return output, StepResult(
            output=self.output.dump(output),
            model=results[-1].model,
            input_tokens=sum(r.input_tokens for r in results),
            output_tokens=sum(r.output_tokens for r in results),
            latency_ms=0.0,
            repaired=len(results) > 1,
        )

    async def _tool_loop_reply(
        self,
        tier: Binding,
        messages: list[dict[str, str]],
        tracer: Tracer,
        deadline: float | None,
        *,
        rails: ToolRails | None,
        workflow: str | None,
        tally: _StepTally,
    ) -> tuple[Any, StepResult]:
        """The final answer of a tool loop, valid against the schema, and its reply (output dumped)."""
        from flotilla.agents.tool_loop import run_tool_loop  # imports the MCP client stack

        loop = await run_tool_loop(
            messages,
            self.tool_view,
            tier.client,
            self.json_schema,
            max_steps=self.max_tool_steps,
            tracer=tracer,
            agent_name=self.name,
            max_tokens=self.max_tokens,
            timeout_s=_remaining(deadline),
            rails=rails,
            workflow=workflow,
        )
        output, problem = self._validate(json.dumps(loop.output))
        tally.reply(valid=not problem)
        evaluation_event(trace.get_current_span(), OUTPUT_SCHEMA_EVALUATION, passed=not problem, explanation=problem)
        if problem:
            raise AgentOutputInvalid(
                f"agent {self.name!r}: the final answer does not match {self.output.name}: {problem}",
                quoted=self._quoted(json.dumps(loop.output, ensure_ascii=False)),
            )
        return output, StepResult(
            output=self.output.dump(output),
            model=loop.model_results[-1].model if loop.model_results else tier.client.name,
            input_tokens=loop.input_tokens,
            output_tokens=loop.output_tokens,
            latency_ms=0.0,
            repaired=False,
            notes=[f"tool {name} withheld: its description changed; re-approve with `flotilla tools approve`" for name in loop.blocked],
            tool_calls=[asdict(call) for call in loop.calls],
        )

    def _apply_policy(self, output: Any, state: dict[str, Any]) -> tuple[Any, list[str]]:
        """The agent's policy hook (e.g. grounding), recorded as an evaluation of the step's output:
        pass when it changed nothing, fail with its notes when it had to correct the output."""
        if self.policy is None:
            return output, []
        output, notes = self.policy(output, state)
        name = getattr(self.policy, "__name__", "policy")
        evaluation_event(trace.get_current_span(), name, passed=not notes, explanation="; ".join(notes))
        return output, notes

    def _quoted(self, reply: str) -> str | None:
        """What a failed reply said where it failed (`FlotillaError.quoted`: redacted per policy)."""
        try:
            self.output.parse(reply)
        except OutputMismatch as exc:
            return getattr(exc, "quoted", None)
        return None

    def _validate(self, text: str) -> tuple[Any, str]:
        try:
            return self.output.parse(text), ""
        except OutputMismatch as exc:
            return None, str(exc)

    async def _call(self, tier: Binding, messages: list[dict[str, str]], tracer: Tracer, deadline: float | None = None) -> tuple[ChatResult, Any, str]:
        """One model call, its reply validated against the output schema inside the chat span, so
        the validation is a `gen_ai.evaluation.result` on the call it judged. Returns (reply, output, problem)."""
        client = tier.client
        provider = getattr(client, "provider", None)
        request = ChatRequest(
            messages=messages,
            json_schema=self.json_schema,
            schema_name=self.output.name,
            max_tokens=self.max_tokens,
            timeout_s=_remaining(deadline),  # no call outlives the step's deadline
        )
        with tracer.start_as_current_span(
            f"chat {client.name}", kind=model_span_kind(provider), record_exception=False, set_status_on_exception=False
        ) as span:
            span.set_attributes(
                {
                    "gen_ai.operation.name": "chat",
                    PROVIDER: provider_name(provider),
                    "gen_ai.request.model": client.name,
                    "gen_ai.agent.name": self.name,
                    "gen_ai.output.type": "json",
                    "gen_ai.request.max_tokens": self.max_tokens,
                    "gen_ai.request.temperature": request.temperature,
                    "flotilla.model_alias": tier.alias,
                    "flotilla.model_fallback": tier.fallback,
                    # Content: exporters keep it redacted, in full or not at all, per audit policy.
                    "gen_ai.input.messages": json.dumps(messages, ensure_ascii=False),
                }
            )
            try:
                result = await client.complete(request)
            except ModelError as exc:
                _fail(span, exc)
                raise
            span.set_attributes(
                {
                    PROVIDER: provider_name(result.provider),
                    "gen_ai.response.model": result.model,
                    "gen_ai.usage.input_tokens": result.input_tokens,
                    "gen_ai.usage.output_tokens": result.output_tokens,
                    "gen_ai.response.finish_reasons": [result.finish_reason],
                    "flotilla.model_local": result.local,
                    "gen_ai.output.messages": json.dumps([{"role": "assistant", "content": result.text}], ensure_ascii=False),
                }
            )
            if result.extra.get("adapter"):  # the LoRA adapter the embedded engine merged for this alias
                span.set_attribute(MODEL_ADAPTER, result.extra["adapter"])
            output, problem = self._validate(result.text)
            evaluation_event(span, OUTPUT_SCHEMA_EVALUATION, passed=not problem, explanation=problem)
            return result, output, problem


@dataclass(slots=True)
class _StepTally:
    """What one step did, for per-specialist metrics: set on its invoke_agent span when it ends."""

    first_try_valid: bool | None = None
    adapter: str | None = None
    """The first tier's LoRA adapter, so the step is counted under the version its calls ran."""
    tiers_tried: int = 0
    repairs: int = 0
    verified: int = 0
    verified_passed: int = 0

    def reply(self, *, valid: bool, adapter: str | None = None) -> None:
        if self.first_try_valid is None and self.tiers_tried <= 1:  # the first tier's first reply only
            self.first_try_valid, self.adapter = valid, adapter

    def record(self, span: Span, tier: str, *, escalated: bool) -> None:
        if not span.is_recording():
            return
        attrs: dict[str, Any] = {
            sc.STEP_REPAIRS: self.repairs,
            sc.STEP_VERIFIED: self.verified,
            sc.STEP_VERIFIED_PASSED: self.verified_passed,
            sc.STEP_TIER: tier,
            sc.STEP_ESCALATED: escalated,
        }
        if self.first_try_valid is not None:
            attrs[sc.STEP_FIRST_TRY_VALID] = self.first_try_valid
        if self.adapter:
            attrs[sc.MODEL_ADAPTER] = self.adapter
        span.set_attributes(attrs)


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.001, deadline - time.monotonic())


@lru_cache(maxsize=1024)
def _content_hash(instructions: str, schema: str) -> str:
    return hashlib.sha256((instructions + schema).encode()).hexdigest()[:12]


def _fail(span: Span, exc: Exception) -> None:
    span.set_status(Status(StatusCode.ERROR, str(exc)))
    span.set_attribute("error.type", type(exc).__name__)
