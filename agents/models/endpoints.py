"""Failure isolation for one HTTP model alias: replicas, circuit breakers, health checks.

An alias may name several replicas (`base_url: [http://a/v1, http://b/v1]`). Each replica has
its own circuit breaker (purgatory's state machine): it opens after `breaker.failures`
consecutive failures (connection refused, 5xx, timeout — never a 4xx, which the replica
answered), refuses calls for `breaker.reset_s`, then lets calls through half-open and closes on
the first success. A call goes to the least busy replica whose breaker lets it through; a
replica that fails hands the call to the next one at once. When no replica can take a call the
pool says so immediately (`NoReplicaAvailable`) instead of waiting on a dead endpoint.

Every alias has its own pool, breakers and counters: nothing on the call path is shared across
aliases, so one endpoint down never slows a workflow that does not use it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from opentelemetry import trace
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OPENED, ClosedState, OpenedState
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import httpx
    from purgatory.service._async.circuitbreaker import AsyncCircuitBreaker

__all__ = ["BreakerSettings", "HealthCheck", "Replica", "ReplicaPool", "NoReplicaAvailable", "DeadlineSpent"]

T = TypeVar("T")
R = TypeVar("R")

# Span attribute and event names (flotilla.* namespace, next to the GenAI conventions).
ENDPOINT_ATTR = "flotilla.endpoint"
BREAKER_STATE_ATTR = "flotilla.breaker.state"
FAILOVER_EVENT = "flotilla.endpoint.failover"
BREAKER_EVENT = "flotilla.breaker.state_changed"


class BreakerSettings(BaseModel):
    """`breaker:` under a model alias in flotilla.yaml; one breaker per replica."""

    model_config = ConfigDict(extra="forbid")

    failures: int = Field(default=5, ge=1)
    """Consecutive failures (connection refused, 5xx, timeout) that open a replica's breaker."""
    reset_s: float = Field(default=30.0, gt=0)
    """How long an open breaker refuses calls before it lets them through again (half-open)."""


class HealthCheck(BaseModel):
    """`health:` under a model alias: background probes that open and close breakers early."""

    model_config = ConfigDict(extra="forbid")

    period_s: float | None = Field(default=None, gt=0)
    """Seconds between probes of every replica; unset: no probes (breakers learn from calls)."""
    path: str = "models"
    """Probed with GET, relative to the replica's base_url (`models` → …/v1/models); an absolute
    path replaces the base path (`/health` → vLLM's http://host:8000/health)."""
    timeout_s: float = Field(default=2.0, gt=0)


class NoReplicaAvailable(Exception):
    """Every replica's breaker is open: nothing worth calling right now."""


class DeadlineSpent(Exception):
    """The call's deadline passed before another replica could be tried."""


@dataclass(eq=False)
class Replica(Generic[T]):
    url: str
    client: T
    """What calls this replica (e.g. an `openai.AsyncOpenAI` bound to `url`)."""
    index: int
    breaker: AsyncCircuitBreaker | None = None
    outstanding: int = 0
    """Calls in flight right now: the balancer sends the next call to the smallest."""

    @property
    def state(self) -> str:
        return self.breaker.context.state if self.breaker else "closed"

    def admits(self, now: float) -> bool:
        """Whether the breaker would let a call through now (open, and not yet due to half-open)."""
        if self.breaker is None:
            return True
        ctx = self.breaker.context
        return ctx.state != OPENED or now > (ctx.opened_at or 0.0) + ctx.ttl


@dataclass(eq=False)
class ReplicaPool(Generic[T]):
    """The replicas of one alias, with their breakers, balancer and optional health probes."""

    alias: str
    urls: Sequence[str]
    make_client: Callable[[str], T]
    is_failure: Callable[[BaseException], bool]
    """Whether an error is the endpoint's fault (counts against its breaker)."""
    breaker: BreakerSettings = field(default_factory=BreakerSettings)
    health: HealthCheck = field(default_factory=HealthCheck)

    def __post_init__(self) -> None:
        self.replicas: list[Replica[T]] = [Replica(url, self.make_client(url), i) for i, url in enumerate(self.urls)]
        self._turn = 0
        # One factory (state store and event bus) per alias: no state shared across aliases.
        self._factory = AsyncCircuitBreakerFactory(
            default_threshold=self.breaker.failures,
            default_ttl=self.breaker.reset_s,
            exclude=[(BaseException, lambda exc: not self.is_failure(exc))],
        )
        self._factory.add_listener(self._on_breaker_event)
        self._health_task: asyncio.Task[None] | None = None

    # -- calls -------------------------------------------------------------------------

    async def call(
        self,
        send: Callable[[T], Awaitable[R]],
        *,
        failover: Callable[[BaseException], bool],
        deadline: float,
    ) -> tuple[R, Replica[T]]:
        """One round: `send` to the least busy admitting replica; on an error `failover` accepts,
        the next replica at once. Raises the last error when every replica failed this round,
        `NoReplicaAvailable` when every breaker is open, `DeadlineSpent` past `deadline`
        (event-loop time)."""
        await self._ready()
        loop = asyncio.get_running_loop()
        tried: set[Replica[T]] = set()
        last: BaseException | None = None
        while True:
            replica = self._pick(tried)
            if replica is None:
                if last is not None:
                    raise last
                raise NoReplicaAvailable(self._all_open_message())
            if loop.time() >= deadline:
                raise DeadlineSpent()
            tried.add(replica)
            try:
                return await self._send(replica, send, loop, deadline), replica
            except OpenedState:
                continue  # opened by a concurrent call between the pick and now: not tried
            except Exception as exc:
                if not failover(exc):
                    raise
                last = exc
                trace.get_current_span().add_event(
                    FAILOVER_EVENT,
                    {"flotilla.model_alias": self.alias, ENDPOINT_ATTR: replica.url, "error.type": type(exc).__name__,
                     BREAKER_STATE_ATTR: replica.state},
                )

    async def _send(self, replica: Replica[T], send: Callable[[T], Awaitable[R]], loop: asyncio.AbstractEventLoop, deadline: float) -> R:
        assert replica.breaker is not None
        ctx = replica.breaker.context
        ctx.handle_new_request()  # raises OpenedState when open; turns half-open when due
        replica.outstanding += 1
        try:
            result = await send(replica.client)
        except asyncio.CancelledError as exc:
            # Cut by our own deadline: the replica was too slow. Cancelled from outside: no verdict.
            if loop.time() >= deadline:
                ctx.handle_exception(TimeoutError(f"no answer from {replica.url} by the call's deadline"))
                await self._settle(replica.breaker)
            raise exc
        except BaseException as exc:
            ctx.handle_exception(exc)  # purgatory counts it unless `is_failure` says otherwise
            await self._settle(replica.breaker)
            raise
        finally:
            replica.outstanding -= 1
        ctx.handle_end_request()
        await self._settle(replica.breaker)
        return result

    def _pick(self, tried: set[Replica[T]]) -> Replica[T] | None:
        now = time.time()  # purgatory stamps opened_at with wall-clock time
        candidates = [r for r in self.replicas if r not in tried and r.admits(now)]
        if not candidates:
            return None
        # Least outstanding requests; ties rotate so sequential calls spread over replicas too.
        self._turn += 1
        size = len(self.replicas)
        return min(candidates, key=lambda r: (r.outstanding, (r.index - self._turn) % size))

    def _all_open_message(self) -> str:
        soonest = min(
            ((r.breaker.context.opened_at or 0.0) + r.breaker.context.ttl - time.time() for r in self.replicas if r.breaker),
            default=0.0,
        )
        urls = ", ".join(r.url for r in self.replicas)
        return (
            f"every replica of model alias {self.alias!r} is failing ({urls}); its circuit breaker is open and "
            f"retries in {max(soonest, 0.0):.1f}s — check the endpoint, or tune `breaker:` for {self.alias!r} in flotilla.yaml"
        )

    # -- breakers ------------------------------------------------------------------------

    async def _ready(self) -> None:
        if self.replicas[0].breaker is None:
            for replica in self.replicas:
                replica.breaker = await self._factory.get_breaker(f"{self.alias} {replica.url}")
        loop = asyncio.get_running_loop()
        task = self._health_task
        # (Re)start the probes in the loop calls are made in: a CLI command's loop ends with it.
        if self.health.period_s is not None and (task is None or task.done() or task.get_loop() is not loop):
            self._health_task = loop.create_task(self._probe_forever(), name=f"health {self.alias}")

    @staticmethod
    async def _settle(breaker: AsyncCircuitBreaker) -> None:
        # Deliver the state machine's events (listeners, state store), as purgatory's __aexit__ does.
        while breaker.context.messages:
            await breaker.messagebus.handle(breaker.context.messages.pop(0), breaker.uow)

    def _on_breaker_event(self, circuit: str, kind: str, event: Any) -> None:
        if kind != "state_changed":
            return
        url = circuit.split(" ", 1)[1]
        trace.get_current_span().add_event(
            BREAKER_EVENT, {"flotilla.model_alias": self.alias, ENDPOINT_ATTR: url, BREAKER_STATE_ATTR: event.state}
        )

    def states(self) -> dict[str, str]:
        """Each replica's breaker state (`closed`, `opened`, `half-opened`), by URL."""
        return {r.url: r.state for r in self.replicas}

    # -- health probes -------------------------------------------------------------------

    async def probe(self, http: httpx.AsyncClient) -> None:
        """Probe every replica once: a healthy one closes its breaker, a failing one opens it."""
        await self._ready()
        await asyncio.gather(*(self._probe_one(http, r) for r in self.replicas))

    async def _probe_one(self, http: httpx.AsyncClient, replica: Replica[T]) -> None:
        import httpx  # only probing pools need it; settings import this module

        assert replica.breaker is not None
        url = httpx.URL(replica.url.rstrip("/") + "/").join(self.health.path)
        try:
            healthy = (await http.get(url, timeout=self.health.timeout_s)).status_code < 500
        except httpx.HTTPError:
            healthy = False
        ctx = replica.breaker.context
        if healthy and ctx.state != "closed":
            ctx.recover_failure()
            ctx.set_state(ClosedState())
        elif not healthy and ctx.state != OPENED:
            ctx.set_state(OpenedState(ctx.name))
        await self._settle(replica.breaker)

    async def _probe_forever(self) -> None:
        import httpx

        assert self.health.period_s is not None
        async with httpx.AsyncClient() as http:
            while True:
                await self.probe(http)
                await asyncio.sleep(self.health.period_s)

    async def aclose(self) -> None:
        task, self._health_task = self._health_task, None
        if task is not None and task.get_loop() is asyncio.get_running_loop():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
