"""The rails pipeline: the configured engines for one point, in order, with transformations chained.

Order at a point: PII redaction first (so nothing after it — a non-local model, the audit store —
sees raw PII), then the blocking detectors (YARA, injection classifier, content safety — with
Llama Guard on its uncertain band when both are on —, Llama Guard, NeMo), then the
tool-result screen (quarantine wraps the final text). The first block stops the chain. Every
decision of an enabled engine becomes a `gen_ai.guardrail.result` span event on the current
span (names in audit/semconv.py). Engines configured off are skipped without a record, and a
point with no enabled engine is not run at all (`engines()` and `notices()` report what is off).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from flotilla.agents.models.base import ModelClient
from flotilla.agents.models.policy import Route, confidential_scope, current_policy
from flotilla.audit.errors import ConfigError
from flotilla.audit.semconv import MODEL_LOCAL, RAIL_EVENT, WORKFLOW, rail_attributes
from flotilla.guardrails.base import GuardrailViolation, Rail, RailPoint, Verdict
from flotilla.guardrails.config import RailsConfig, load_rails_config, merge_overrides
from flotilla.guardrails.extras import require_explicit_extras

if TYPE_CHECKING:
    from flotilla.guardrails.engines import EngineFactory, EngineSlot

__all__ = ["RailsPipeline", "RailsReport", "Guardrails"]

ModelResolver = Callable[[str], ModelClient]


@dataclass(frozen=True, slots=True)
class RailsReport:
    point: RailPoint
    allowed: bool
    text: str
    """The text after every transformation (redaction, quarantine) that ran."""
    verdicts: list[Verdict]
    latency_ms: float
    blocked_by: Verdict | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "point": self.point.value,
            "allowed": self.allowed,
            "blocked_by": None if self.blocked_by is None else _decision(self.blocked_by),
            "transformed": any(v.text is not None for v in self.verdicts),
            "text": self.text,
            "latency_ms": round(self.latency_ms, 3),
            "verdicts": [
                {
                    "engine": v.engine,
                    "enabled": v.enabled,
                    "allowed": v.allowed,
                    "rule": v.rule,
                    "score": None if v.score is None else round(v.score, 4),
                    "latency_ms": round(v.latency_ms, 3),
                    "transformed": v.text is not None,
                    **({"detail": v.detail} if v.detail else {}),
                    **({"model_calls": v.attributes["model_calls"]} if "model_calls" in v.attributes else {}),
                    **{k: v.attributes[k] for k in ("model_alias", "model_local", "rerouted", "threshold", "category", "cascade", "allow_listed") if k in v.attributes},
                }
                for v in self.verdicts
            ],
        }


def _decision(verdict: Verdict) -> dict[str, Any]:
    """What a user needs to act on a block: engine, category, score against threshold, why."""
    return {"engine": verdict.engine, "rule": verdict.rule, "category": verdict.attributes.get("category", verdict.rule),
            "score": None if verdict.score is None else round(verdict.score, 4), "threshold": verdict.attributes.get("threshold"),
            "detail": verdict.detail}


def rail_locality(rail: Rail) -> tuple[dict[str, Any], Route]:
    """Which model an engine would use now, whether it is local, and where its call would go.

    An engine that calls a flotilla model exposes it as `model_client` (NeMo: its alias's
    guarded client); one that runs a model in this process sets `in_process_model` (Llama Guard).
    Engines with neither use no model and record nothing."""
    client = getattr(rail, "model_client", None)
    if client is None:
        if getattr(rail, "in_process_model", False):
            return {"model_alias": "in-process", "model_local": True}, "direct"
        return {}, "direct"
    alias = getattr(client, "alias", client.name)
    route = getattr(client, "route", None)
    if route is not None:
        where: Route = route()
    else:  # a bare client (tests, embedding): its own word on locality, and no fallback
        local = bool(getattr(client, "local", False))
        where = "refused" if current_policy().confidential and not local else "direct"
    local = where == "rerouted" or (where == "direct" and bool(getattr(client, "local", False)))
    return {"model_alias": alias, "model_local": local, **({"rerouted": True} if where == "rerouted" else {})}, where


def _refused(engine: str, rail: Rail) -> Verdict:
    """The safe answer when the engine's model may not see this run's text: block, send nothing."""
    client = rail.model_client  # type: ignore[attr-defined]  # only engines with a model are refused
    refuse = getattr(client, "refuse", None)
    why = refuse().message if refuse is not None else (
        f"model {client.name!r} is not local and this run is confidential ({current_policy().reason or 'policy'})"
    )
    return Verdict(
        engine=engine, rule="remote-model-refused", allowed=False, latency_ms=0.0,
        detail=f"{why}; the {engine} rail sent nothing and the run stops here",
    )


def _record(point: RailPoint, verdict: Verdict, workflow: str | None, agent: str | None) -> None:
    span = trace.get_current_span()
    if not span.is_recording():
        return
    attrs = rail_attributes(
        engine=verdict.engine, rule=verdict.rule, point=point.value, allowed=verdict.allowed,
        latency_ms=verdict.latency_ms, transformed=verdict.text is not None, score=verdict.score,
        detail=verdict.detail, enabled=verdict.enabled,
    )
    if workflow:
        attrs[WORKFLOW] = workflow
    if agent:
        attrs["gen_ai.agent.name"] = agent
    if isinstance(verdict.attributes.get("threshold"), float):
        attrs["flotilla.rail.threshold"] = verdict.attributes["threshold"]
    if "cascade" in verdict.attributes:
        attrs["flotilla.rail.cascade"] = str(verdict.attributes["cascade"])
    if "model_calls" in verdict.attributes:
        attrs["flotilla.rail.model_calls"] = int(verdict.attributes["model_calls"])
    if "model_local" in verdict.attributes:  # the proof a confidential run's rails stayed local
        attrs["flotilla.model_alias"] = str(verdict.attributes["model_alias"])
        attrs[MODEL_LOCAL] = bool(verdict.attributes["model_local"])
        if verdict.attributes.get("rerouted"):
            attrs["flotilla.policy.rerouted"] = True
    span.add_event(RAIL_EVENT, attrs)


class RailsPipeline:
    """The engines of one rails configuration. `run` reports; `check` raises on a block."""

    def __init__(self, slots: Sequence[EngineSlot]) -> None:
        self._slots = list(slots)
        self._active_points = frozenset(p for s in self._slots if s.enabled for p in s.points)

    def engines(self) -> list[dict[str, Any]]:
        """What is configured, for `flotilla validate` and operators: name, enabled, points."""
        return [
            {"engine": s.name, "enabled": s.enabled, "points": sorted(p.value for p in s.points),
             **({"disabled_reason": s.disabled_reason or f"rails.{s.name}.enabled is false"} if not s.enabled else {}),
             **({"note": s.note} if s.enabled and s.note else {}), **({"tuning": s.tuning} if s.tuning else {})}
            for s in self._slots
        ]

    def notices(self) -> list[str]:
        """What a run should tell its user: engines off for a missing extra, engines running reduced."""
        return [f"rail {s.name} is off: {s.disabled_reason}" for s in self._slots if s.missing_extra] + [
            f"rail {s.name}: {s.note}" for s in self._slots if s.enabled and s.note
        ]

    async def warm_up(self) -> None:
        """Build every enabled engine now, off the event loop (spaCy, MiniLM take seconds to load)."""
        import asyncio

        for slot in self._slots:
            if slot.enabled and slot.name != "nemo":  # NeMo builds lazily inside its own async lock
                rail = await asyncio.to_thread(slot.rail)
                if slot.name in ("injection-classifier", "content-safety", "tool-result-screen"):
                    point = next(iter(slot.points))
                    await rail.check("warm up", point=point)

    async def run(self, point: RailPoint, text: str, *, workflow: str | None = None, agent: str | None = None) -> RailsReport:
        if point not in self._active_points:  # no enabled engine here: the point costs nothing
            return RailsReport(point=point, allowed=True, text=text, verdicts=[], latency_ms=0.0, blocked_by=None)
        started = time.perf_counter()
        verdicts: list[Verdict] = []
        with contextlib.ExitStack() as scope:  # ends the confidential scope the chain may enter
            blocked, current = await self._chain(point, text, verdicts, scope, workflow, agent)
        return RailsReport(
            point=point, allowed=blocked is None, text=current, verdicts=verdicts,
            latency_ms=(time.perf_counter() - started) * 1000, blocked_by=blocked,
        )

    async def _chain(self, point: RailPoint, current: str, verdicts: list[Verdict], scope: contextlib.ExitStack,
                     workflow: str | None, agent: str | None) -> tuple[Verdict | None, str]:
        blocked: Verdict | None = None
        for slot in self._slots:
            if point not in slot.points:
                continue
            if not slot.enabled:
                continue  # off costs nothing and records nothing; `engines()` and `notices()` say it is off
            else:
                try:
                    rail = slot.rail()
                    # The run's locality policy applies to rails as to agents: decided before the
                    # engine sees the text, so a refused engine never starts.
                    locality, route = rail_locality(rail)
                    verdict = _refused(slot.name, rail) if route == "refused" else await rail.check(current, point=point)
                    verdict = dataclasses.replace(verdict, attributes={**verdict.attributes, **locality})
                except ConfigError:
                    raise
                except Exception as exc:  # an engine that cannot decide fails closed, and says why
                    verdict = Verdict(engine=slot.name, rule="engine-error", allowed=False, latency_ms=0.0,
                                      detail=f"{type(exc).__name__}: {exc}"[:300])
            verdicts.append(verdict)
            _record(point, verdict, workflow, agent)
            if not verdict.allowed:
                blocked = verdict
                break
            if verdict.text is not None:
                current = verdict.text
            if point is RailPoint.INPUT and verdict.attributes.get("entities"):
                # PII in the workflow input makes the run confidential (the runner's policy says
                # so for the agents); the engines after this one must already obey it.
                scope.enter_context(confidential_scope("input rail found PII"))
        return blocked, current

    async def check(self, point: RailPoint, text: str, *, workflow: str | None = None, agent: str | None = None) -> str:
        report = await self.run(point, text, workflow=workflow, agent=agent)
        if report.blocked_by is not None:
            raise GuardrailViolation(report.blocked_by, point)
        return report.text


class Guardrails:
    """The runner's rails hook: one pipeline per workflow (defaults + its `rails:` section).

        rails = Guardrails(model_resolver=lambda alias: registry.resolve(alias).client)
        rails.configure_workflow(spec.name, spec.rails)       # optional per-workflow overrides
        text = await rails.check(RailPoint.INPUT, text, workflow=spec.name)   # or GuardrailViolation
    """

    def __init__(self, base: dict[str, Any] | RailsConfig | None = None, *, model_resolver: ModelResolver | None = None,
                 factory: EngineFactory | None = None) -> None:
        from flotilla.guardrails.engines import EngineFactory  # here: engines.py imports this module

        self.factory = factory or EngineFactory(model_resolver=model_resolver)
        if isinstance(base, dict):
            require_explicit_extras(base)
        self._base = base if isinstance(base, RailsConfig) else load_rails_config(base)
        self._base_raw: dict[str, Any] = self._base.model_dump(mode="json", exclude_none=True)
        self._configs: dict[str, RailsConfig] = {}
        self._pipelines: dict[str | None, RailsPipeline] = {}

    def configure_workflow(self, workflow: str, overrides: dict[str, Any] | None) -> RailsConfig:
        """Validates now (a bad `rails:` section is a ConfigError at load, not mid-run)."""
        require_explicit_extras(overrides)
        config = load_rails_config(merge_overrides(self._base_raw, overrides or {}))
        self._configs[workflow] = config
        self._pipelines.pop(workflow, None)
        return config

    def config(self, workflow: str | None = None) -> RailsConfig:
        return self._configs.get(workflow, self._base) if workflow else self._base

    def pipeline(self, workflow: str | None = None) -> RailsPipeline:
        if workflow not in self._pipelines:
            config = self._configs.get(workflow, self._base) if workflow else self._base
            self._pipelines[workflow] = self.factory.pipeline(config)
        return self._pipelines[workflow]

    def notices(self, workflow: str | None = None) -> list[str]:
        """Engines of this workflow that are off or reduced because an extra is not installed."""
        return self.pipeline(workflow).notices()

    async def warm_up(self, workflow: str | None = None) -> None:
        """Load the workflow's engines ahead of the first run (optional; otherwise they load on first use)."""
        await self.pipeline(workflow).warm_up()

    async def report(self, point: RailPoint, text: str, *, workflow: str | None = None, agent: str | None = None) -> RailsReport:
        return await self.pipeline(workflow).run(RailPoint(point), text, workflow=workflow, agent=agent)

    async def check(self, point: RailPoint, text: str, *, workflow: str | None = None, agent: str | None = None) -> str:
        return await self.pipeline(workflow).check(RailPoint(point), text, workflow=workflow, agent=agent)

