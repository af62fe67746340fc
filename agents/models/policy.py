"""Per-run model policy in the client layer: sensitivity, budgets and cost accounting.

Every client the registry hands out is a `GuardedClient`. During a run the runner opens a
`run_scope(RunPolicy(...))`; from then on every model call made anywhere in that run (agent
steps, tool loops, the research lead, rails that call a model) goes through the guard, which

- refuses a non-local model when the run is confidential (`RemoteModelRefused`), or reroutes
  the call to the local embedded model when the policy says `fallback`;
- refuses a call once the run's token or cost ceiling is spent (`BudgetExhausted`);
- prices the call from the `prices:` table and records locality, cost, the all-frontier
  counterfactual cost and escalation on the `chat` span that wraps it.

Enforcement does not depend on callers behaving: there is no other path to a model. (The
tool loop's native OpenAI tool calling calls `chat_completion`, which the guard wraps the same
way: refused, budgeted and accounted like `complete`.)
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from opentelemetry import trace
from pydantic import BaseModel, ConfigDict, Field

from flotilla.agents.models.base import ChatRequest, ChatResult, ModelClient, ModelError

__all__ = [
    "ModelPrice",
    "PriceTable",
    "RunPolicy",
    "RunLedger",
    "GuardedClient",
    "RemoteModelRefused",
    "BudgetExhausted",
    "run_scope",
    "confidential_scope",
    "Route",
    "current_policy",
    "current_ledger",
    "escalating",
    "FRONTIER_ALIAS",
]

FRONTIER_ALIAS = "frontier"

Route = Literal["direct", "rerouted", "refused"]
"""Where a guarded call goes: to its own endpoint, rerouted to the local model, or nowhere."""


class RemoteModelRefused(ModelError):
    """A confidential run tried to call a model outside the organisation."""

    code = "remote_model_refused"


class BudgetExhausted(ModelError):
    """The run's token or cost ceiling is spent; no further model calls are made."""

    code = "budget_exhausted"


class ModelPrice(BaseModel):
    """USD per million tokens, one entry per model alias under `prices:` in flotilla.yaml."""

    model_config = ConfigDict(extra="forbid")

    input_per_mtok: float = Field(default=0.0, ge=0)
    output_per_mtok: float = Field(default=0.0, ge=0)

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1_000_000


@dataclass(frozen=True, slots=True)
class PriceTable:
    prices: Mapping[str, ModelPrice] = field(default_factory=dict)
    counterfactual_alias: str = FRONTIER_ALIAS
    """The alias whose price answers "what had every call gone to the frontier model"."""

    def cost(self, alias: str, input_tokens: int, output_tokens: int) -> float:
        price = self.prices.get(alias)
        return price.cost(input_tokens, output_tokens) if price else 0.0

    def counterfactual(self, input_tokens: int, output_tokens: int) -> float:
        return self.cost(self.counterfactual_alias, input_tokens, output_tokens)


@dataclass(frozen=True, slots=True)
class RunPolicy:
    confidential: bool = False
    on_remote: Literal["refuse", "fallback"] = "refuse"
    """In a confidential run: refuse a non-local call, or reroute it to the local model."""
    max_tokens: int | None = None
    """Ceiling on input + output tokens over every model call of the run."""
    max_cost_usd: float | None = None
    reason: str = ""
    """Why the run is confidential (`workflow setting`, `run flag`, `input rail found PII`)."""


@dataclass(slots=True)
class RunLedger:
    """What one run's model calls used. Shared by every task of the run (asyncio: no locks)."""

    calls: int = 0
    remote_calls: int = 0
    rerouted_calls: int = 0
    refused_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    all_frontier_cost_usd: float = 0.0
    escalations: int = 0

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_calls": self.calls,
            "remote_calls": self.remote_calls,
            "rerouted_calls": self.rerouted_calls,
            "refused_calls": self.refused_calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": round(self.cost_usd, 6),
            "all_frontier_cost_usd": round(self.all_frontier_cost_usd, 6),
            "saved_usd": round(self.all_frontier_cost_usd - self.cost_usd, 6),
            "escalations": self.escalations,
        }

    def span_attributes(self) -> dict[str, Any]:
        """Run totals for the invoke_workflow span (names distinct from the per-call ones)."""
        return {
            "flotilla.run.model_calls": self.calls,
            "flotilla.run.remote_calls": self.remote_calls,
            "flotilla.run.cost_usd": self.cost_usd,
            "flotilla.run.all_frontier_cost_usd": self.all_frontier_cost_usd,
            "flotilla.run.input_tokens": self.input_tokens,
            "flotilla.run.output_tokens": self.output_tokens,
        }


_policy: contextvars.ContextVar[RunPolicy | None] = contextvars.ContextVar("flotilla_run_policy", default=None)
_ledger: contextvars.ContextVar[RunLedger | None] = contextvars.ContextVar("flotilla_run_ledger", default=None)
_escalation: contextvars.ContextVar[str | None] = contextvars.ContextVar("flotilla_escalation", default=None)


def current_policy() -> RunPolicy:
    return _policy.get() or RunPolicy()


def current_ledger() -> RunLedger | None:
    return _ledger.get()


@contextlib.contextmanager
def run_scope(policy: RunPolicy, ledger: RunLedger | None = None) -> Iterator[RunLedger]:
    """Every model call inside (including asyncio tasks started inside) runs under `policy`."""
    ledger = ledger or RunLedger()
    tokens = (_policy.set(policy), _ledger.set(ledger))
    try:
        yield ledger
    finally:
        _policy.reset(tokens[0])
        _ledger.reset(tokens[1])


@contextlib.contextmanager
def confidential_scope(reason: str) -> Iterator[RunPolicy]:
    """Inside, the current run is confidential (same ledger and settings otherwise).

    Used where confidentiality is learnt mid-way, e.g. the input rail finding PII: the engines
    after it at that point must already obey it."""
    policy = current_policy()
    if policy.confidential:
        yield policy
        return
    stricter = dataclasses.replace(policy, confidential=True, reason=", ".join(filter(None, (policy.reason, reason))))
    token = _policy.set(stricter)
    try:
        yield stricter
    finally:
        _policy.reset(token)


@contextlib.contextmanager
def escalating(reason: str) -> Iterator[None]:
    """Marks the calls inside as a specialist's work escalated to the frontier model."""
    token = _escalation.set(reason)
    try:
        yield
    finally:
        _escalation.reset(token)


class GuardedClient:
    """A ModelClient that applies the current run's policy around another client."""

    def __init__(
        self,
        inner: ModelClient,
        *,
        alias: str,
        local: bool,
        prices: PriceTable | None = None,
        local_fallback: Callable[[], ModelClient] | None = None,
        tool_calls: Literal["native", "json"] = "json",
    ) -> None:
        self.inner = inner
        self.alias = alias
        self.tool_calls = tool_calls
        """How the tool loop offers tools to this alias (the alias's `tool_calls:` setting)."""
        # Local only when both the configuration and the client itself say so.
        self.local = bool(local and getattr(inner, "local", True))
        self.prices = prices or PriceTable()
        self._local_fallback = local_fallback
        self.name = inner.name

    # Read by the tool loop to choose native tool calling; see the module docstring.
    @property
    def model(self) -> Any:
        return getattr(self.inner, "model", None)

    @property
    def provider(self) -> str:
        return getattr(self.inner, "provider", "unknown")

    @property
    def timeout_s(self) -> float:
        return float(getattr(self.inner, "timeout_s", 60.0))

    @property
    def chat_completion(self) -> Any:
        """The guarded raw chat call for native tool calling, or None when the inner client has
        none or the call could not go to this endpoint as it is (a confidential run rerouting or
        refusing it): the loop then takes `complete`, which reroutes or refuses."""
        if getattr(self.inner, "chat_completion", None) is None or self.route() != "direct":
            return None
        return self._guarded_chat_completion

    async def _guarded_chat_completion(self, kwargs: dict[str, Any]) -> tuple[Any, ChatResult]:
        replies: list[Any] = []

        async def call(client: Any) -> ChatResult:
            message, result = await client.chat_completion(kwargs)
            replies.append(message)
            return result

        result = await self._guarded(call, reroutable=False)
        return replies[0], result

    def route(self) -> Route:
        """Where a call made now would go under the current run's policy (nothing is sent).

        Rails ask this before they hand text to an engine that calls this model, so a refused
        engine is reported without ever being started."""
        policy = current_policy()
        if not policy.confidential or self.local:
            return "direct"
        if policy.on_remote == "fallback" and self._local_fallback is not None:
            return "rerouted"
        return "refused"

    def refuse(self) -> RemoteModelRefused:
        """Counts and records a refused call; returns the error saying what to change."""
        policy, ledger = current_policy(), current_ledger()
        if ledger is not None:
            ledger.refused_calls += 1
        trace.get_current_span().add_event(
            "flotilla.policy.refused", {"flotilla.model_alias": self.alias, "flotilla.sensitivity": "confidential"}
        )
        return RemoteModelRefused(
            f"model alias {self.alias!r} ({self.name}) is not local and this run is confidential"
            f"{' (' + policy.reason + ')' if policy.reason else ''}; point {self.alias!r} at a local endpoint "
            "or allow the local fallback"
        )

    async def complete(self, request: ChatRequest) -> ChatResult:
        return await self._guarded(lambda client: client.complete(request), reroutable=True)

    async def _guarded(self, call: Callable[[Any], Awaitable[ChatResult]], *, reroutable: bool) -> ChatResult:
        """`call(client)` under the run's policy: locality, budgets, then the call's tokens, cost and
        locality on the ledger and the chat span. Every model call of a run passes here."""
        policy, ledger = current_policy(), current_ledger()
        span = trace.get_current_span()
        client, alias, rerouted = self.inner, self.alias, False
        route = self.route()
        if route == "refused" or (route == "rerouted" and not reroutable):
            raise self.refuse()
        if route == "rerouted":
            client, rerouted = self._local_fallback(), True  # type: ignore[misc]  # route() checked it
        if ledger is not None:
            if policy.max_tokens is not None and ledger.tokens >= policy.max_tokens:
                raise BudgetExhausted(f"token ceiling of {policy.max_tokens:,} reached ({ledger.tokens:,} used)")
            if policy.max_cost_usd is not None and ledger.cost_usd >= policy.max_cost_usd:
                raise BudgetExhausted(f"cost ceiling of ${policy.max_cost_usd:.4f} reached (${ledger.cost_usd:.4f} spent)")
        result = await call(client)
        local = bool(result.local) and (rerouted or self.local)
        # A rerouted call is priced as the local model it actually ran on.
        cost = self.prices.cost("embedded" if rerouted else alias, result.input_tokens, result.output_tokens)
        counterfactual = self.prices.counterfactual(result.input_tokens, result.output_tokens)
        escalation = _escalation.get()
        attributes: dict[str, Any] = {
            "flotilla.model_alias": alias,
            "flotilla.model_local": local,
            "flotilla.cost_usd": cost,
            "flotilla.cost_usd.all_frontier": counterfactual,
        }
        if rerouted:
            attributes["flotilla.policy.rerouted"] = True
        if escalation is not None:
            attributes["flotilla.escalated"] = True
            attributes["flotilla.escalation.reason"] = escalation
        if ledger is not None:
            ledger.calls += 1
            ledger.remote_calls += 0 if local else 1
            ledger.rerouted_calls += int(rerouted)
            ledger.input_tokens += result.input_tokens
            ledger.output_tokens += result.output_tokens
            ledger.cost_usd += cost
            ledger.all_frontier_cost_usd += counterfactual
            ledger.escalations += int(escalation is not None)
        if span.is_recording() and str(getattr(span, "name", "")).startswith("chat "):
            span.set_attributes(attributes)
        elif span.is_recording():  # a model call outside a chat span (e.g. a rail): still on the record
            span.add_event("flotilla.model_call", attributes)
        return result

    async def aclose(self) -> None:
        close = getattr(self.inner, "aclose", None)
        if close is not None:
            await close()
