"""Running a router workflow: decide where the request goes, then run that workflow as the same run.

One run record (under the router's name) holds the routing step first, then the chosen
workflow's steps; the decision is a `route` span with every score. Under the threshold (or for
an out-of-scope label) with `fallback: needs_review`, the run ends `needs_review` at once, the
scores as the reason; a workflow fallback simply runs that workflow.
"""

from __future__ import annotations

import asyncio
import inspect
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flotilla.audit.errors import FlotillaError
from flotilla.graphs.router import CLASSIFIER_NAME, Router, RouteDecision, resolve_target
from flotilla.graphs.spec import NEEDS_REVIEW, WorkflowSpec
from flotilla.graphs.status import review_error

if TYPE_CHECKING:
    from flotilla.audit.runs import RunRecord
    from flotilla.graphs.runner import EventSink, RunResult, WorkflowRunner

__all__ = ["run_routed", "routed_target", "router_for"]

_ROUTERS: dict[tuple[str, str], Router] = {}
"""Trained routers by (file, version): a classifier is immutable, so every runner may share it."""


def router_for(spec: WorkflowSpec, cache_dir: Path | None = None) -> Router:
    key = (str(spec.source or spec.name), spec.version())
    if key not in _ROUTERS:
        _ROUTERS[key] = Router(spec, cache_dir)
    return _ROUTERS[key]


async def run_routed(
    runner: WorkflowRunner,
    spec: WorkflowSpec,
    data: str | bytes,
    *,
    run_id: str | None,
    initiator: str | None,
    on_event: EventSink | None,
    confidential: bool,
) -> RunResult:
    from flotilla.graphs.runner import RunEvent, RunResult

    run_id = run_id or uuid.uuid4().hex
    raw_text = data if isinstance(data, str) else data.decode("utf-8", errors="replace")
    runner.runs.start_run(run_id, spec.name, spec.version(), raw_text, initiator)

    async def emit(kind: str, **payload: Any) -> None:
        if on_event is not None:
            outcome = on_event(RunEvent(kind, run_id, payload))  # type: ignore[arg-type]
            if inspect.isawaitable(outcome):
                await outcome

    try:
        text = runner.decode_input(data, spec)
        router = router_for(spec, getattr(runner, "cache_dir", None))
        await asyncio.to_thread(lambda: router.classifier)  # the first call trains (or loads) it: off the loop
        decision = _traced_decision(runner, spec, router, text, run_id, initiator)
        target = None if decision.target == NEEDS_REVIEW else resolve_target(spec, decision.target)
    except FlotillaError as exc:  # an empty request, a broken router file: a kept, typed failure
        result = RunResult(run_id, spec.name, "failed", error=exc.to_dict())
        await emit("started", workflow=spec.name, resumed=False)
        await asyncio.to_thread(runner.runs.finish_run, run_id, result.status, result.steps, error=result.error)
        await emit("finished", status=result.status, error=result.error)
        return result
    step = decision.step_record(spec.name)
    if target is None:  # nothing to hand the run to: a person decides
        result = RunResult(run_id, spec.name, "needs_review", output=decision.to_dict(), steps=[step])
        result.error = review_error([{"step": "route", "reason": decision.reason}])
        await emit("started", workflow=spec.name, resumed=False)
        await emit("step", **step)
        await asyncio.to_thread(runner.runs.finish_run, run_id, result.status, result.steps, output=result.output, error=result.error)
        await emit("finished", status=result.status, error=result.error)
        return result
    return await runner._execute(target, run_id, data, initiator=initiator, on_event=on_event, resume=False, confidential=confidential, routed=step)


def _traced_decision(runner: WorkflowRunner, spec: WorkflowSpec, router: Router, text: str, run_id: str, initiator: str | None) -> RouteDecision:
    """The decision, as a `route {router}` span carrying every score (it lands in the audit trail)."""
    with runner.telemetry.tracer.start_as_current_span(f"route {spec.name}", record_exception=False, set_status_on_exception=False) as span:
        span.set_attributes(
            {
                "gen_ai.conversation.id": run_id,
                "flotilla.run_id": run_id,
                "flotilla.workflow": spec.name,
                "flotilla.workflow_version": spec.version(),
                "flotilla.initiator": initiator or "unknown",
                "flotilla.route.classifier": CLASSIFIER_NAME,
            }
        )
        decision = router.decide(text)
        assert spec.router is not None
        span.set_attributes(
            {
                "flotilla.route.label": decision.label,
                "flotilla.route.confidence": round(decision.confidence, 4),
                "flotilla.route.threshold": spec.router.threshold,
                "flotilla.route.target": decision.target,
                "flotilla.route.fallback": decision.fallback,
                "flotilla.route.scores": [f"{label}={score:.4f}" for label, score in decision.scores.items()],
                "flotilla.route.latency_ms": round(decision.latency_ms, 3),
            }
        )
        span.add_event("flotilla.route.decision", {"reason": decision.reason})
    return decision


def routed_target(spec: WorkflowSpec, record: RunRecord) -> WorkflowSpec:
    """The workflow a router run was handed to (for `resume`), from its route step."""
    from flotilla.graphs.runner import RunNotResumable

    route = next((s for s in record.steps or [] if s.get("node_kind") == "route"), None)
    target = ((route or {}).get("output") or {}).get("target")
    if not target or target == NEEDS_REVIEW:
        raise RunNotResumable(f"run {record.run_id} was not handed to a workflow; start it again with `flotilla run {spec.name}`")
    return resolve_target(spec, target)
