"""A `flotilla worker`: runs flotilla workflows from a Temporal task queue (temporalio-langgraph).

What temporalio-langgraph 0.1.0 (pinned in pyproject) does and asks of us, read from its source:

- `LangGraphPlugin(graphs={name: StateGraph})` takes *uncompiled* graphs at worker start; the
  workflow gets one with `graph(name).compile(...)` and LangGraph's own Pregel loop runs inside
  the Temporal workflow (conditional edges, `Send` fan-out, reducers: deterministic, replayed).
- Every node must say `metadata={"execute_in": "activity" | "workflow"}`; the other metadata keys
  are `workflow.execute_activity` options (start_to_close_timeout, heartbeat_timeout,
  retry_policy, …). A node with a LangGraph `retry_policy` is refused: Temporal retries.
- An activity node is registered as activity `<graph>.<node>`; the node function must look
  module-level (`task_id` refuses `<locals>` qualnames), so each is renamed below. Only the state
  (JSON) and a stripped RunnableConfig cross the boundary: no callbacks, stores or live objects.
- Activities never heartbeat by themselves: `_heartbeating` beats while a node runs, so a killed
  worker is noticed within `heartbeat_timeout` and the step is retried on another worker. The
  beats name this worker, so the retry writes a `recovered` audit record saying who took the
  step over from whom, on which attempt (as a local take-over does).
- `interrupt()` inside an activity comes back as the workflow's `__interrupt__`; resuming is
  `Command(resume=…)` with the workflow's `InMemorySaver` (graphs/backends/temporal_workflow.py).

Versions: each workflow version has a task queue of its own, `<queue>@<workflow>-<version>`
(`versioned_queue`); the backend submits a run, and the workflow its activities, to the queue of
the version the submitter loaded, and a worker polls the queues of the versions it loaded. So a
run is only ever executed and replayed by a worker with the same definition; a worker with a
changed workflow file never picks up a run of the old version, which stays `pending` and whose
`status`/`events` say that no worker serves that version (until one starts with that file).

Rails, spans and the audit chain behave as in `local`: the node functions are the very ones
`compile_workflow` builds, from this worker's runtime (its rails, MCP hub, telemetry); each node
activity runs under the run's locality policy; its spans name the run (a per-run trace id).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import json
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from langgraph._internal._runnable import RunnableCallable
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags
from temporalio import activity
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

from flotilla.agents.models.policy import RunLedger, run_scope
from flotilla.audit.errors import ConfigError, FlotillaError
from flotilla.audit.runs import UNFINISHED, RunStore
from flotilla.graphs.backends.temporal_workflow import STEP_FAILED, FlotillaRun, RunRequest, versioned_queue
from flotilla.graphs.compile import StepFailed
from flotilla.graphs.outcome import RunResult, record_failure, run_policy, select_output
from flotilla.graphs.recovery import process_owner
from flotilla.graphs.status import review_error
from flotilla.graphs.verify_spec import tiers_of
from flotilla.guardrails.base import RailPoint, own_messages

if TYPE_CHECKING:
    from langgraph.graph import StateGraph
    from temporalio.client import Client
    from temporalio.worker import Worker

    from flotilla.graphs.spec import WorkflowSpec
    from flotilla.runtime.settings import TemporalSettings
    from flotilla.runtime.wiring import Runtime

__all__ = ["build_workers", "run_graphs", "RunActivities", "TEMPORAL_OWNER"]

TEMPORAL_OWNER = "temporal:"
"""Prefix of the run-store owner of runs on the temporal backend (then the task queue)."""


class _RunParent(NonRecordingSpan):
    """The run's span context in an activity: its trace id comes from the run id, and it carries
    the run's attributes so `RunContextProcessor` copies them onto every span started under it."""

    def __init__(self, context: SpanContext, attributes: dict[str, Any]) -> None:
        super().__init__(context)
        self.attributes = attributes


@contextmanager
def run_context(run_id: str, workflow: str) -> Iterator[None]:
    digest = hashlib.sha256(run_id.encode()).digest()
    span_context = SpanContext(int.from_bytes(digest[:16], "big"), int.from_bytes(digest[16:24], "big"), is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    attributes = {"flotilla.run_id": run_id, "gen_ai.conversation.id": run_id, "flotilla.workflow": workflow}
    token = otel_context.attach(trace.set_span_in_context(_RunParent(span_context, attributes)))
    try:
        yield
    finally:
        otel_context.detach(token)


@asynccontextmanager
async def _heartbeating(every_s: float, *details: Any):
    """Beat while the body runs (a long model call too): Temporal notices a dead worker in time.
    `details` (this worker) reach the next attempt, which so learns whose step it takes over."""

    async def beat() -> None:
        while True:
            activity.heartbeat(*details)
            await asyncio.sleep(every_s)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()


def _record_retry(runs: RunStore, run_id: str, node: str, worker: str) -> None:
    """A step's activity on a later attempt: a `recovered` record in the audit chain, as a local
    take-over writes (graphs/recovery.py) — which worker took the step over, on which attempt, and
    from whom (the worker the last heartbeat named; none when the step failed without dying)."""
    info = activity.info()
    previous = info.heartbeat_details[0] if info.heartbeat_details else None
    if runs.audit is not None:
        event = {"run_id": run_id, "event": "recovered", "step": node, "attempt": info.attempt, "previous_owner": previous,
                 "owner": worker, "backend": "temporal", "task_queue": info.task_queue}
        runs.audit.record("run", event, run_id=run_id)


def _activity_node(fn: Any, spec: WorkflowSpec, node: str, heartbeat_s: float, runs: RunStore | None = None):
    """The node as the body of its activity: the run's policy and trace, heartbeats, and a failed
    step turned into a non-retryable error carrying its record (the agent already escalated)."""
    worker = process_owner()

    async def step(state: dict[str, Any]) -> Any:
        run_id = activity.info().workflow_id
        if activity.info().attempt > 1 and runs is not None:
            await asyncio.to_thread(_record_retry, runs, run_id, node, worker)
        policy = run_policy(spec, bool(state.get("confidential")), pii=False)
        with run_context(run_id, spec.name), run_scope(policy, RunLedger()):
            async with _heartbeating(heartbeat_s, worker):
                try:
                    if inspect.iscoroutinefunction(fn):
                        return await fn(state)
                    return await asyncio.to_thread(fn, state)
                except StepFailed as exc:
                    outcome = RunResult(run_id, spec.name, "failed")
                    record_failure(outcome, exc.cause)
                    raise ApplicationError(str(exc), exc.record, outcome.status, outcome.error, type=STEP_FAILED, non_retryable=True) from None

    step.__name__ = step.__qualname__ = f"node_{spec.name}_{node}"  # temporalio-langgraph wants a module-level-looking name
    step.__module__ = __name__
    return step


def _builder(spec: WorkflowSpec, runtime: Runtime) -> StateGraph:
    """The workflow's graph exactly as the local runner compiles it, before compilation."""
    from flotilla.graphs.build import build_agents
    from flotilla.graphs.compile import compile_workflow
    from flotilla.graphs.factory import WorkflowContext, compile_python
    from flotilla.graphs.research import compile_research

    runner, tracer = runtime.runner, runtime.telemetry.tracer
    if spec.kind == "router":
        raise ConfigError(f"workflow {spec.name!r} is a router; run the workflows it routes to on the temporal backend")
    if runner.rails is not None:
        runner.rails.configure_workflow(spec.name, spec.rails)
    if spec.kind == "python":
        ctx = WorkflowContext(spec.name, runner.registry, tracer, rails=runner.rails, tools=runner.tools)
        return compile_python(spec, ctx).builder
    agents = build_agents(spec, runner.registry, runner.tools)
    if spec.kind == "research":
        return compile_research(spec, agents, tracer, rails=runner.rails).builder
    return compile_workflow(spec, agents, tracer, rails=runner.rails, tools=runner.tools).builder


def run_graphs(specs: dict[str, WorkflowSpec], runtime: Runtime, options: TemporalSettings, *, on_skip: Callable[[str, str], None] | None = None) -> dict[str, StateGraph]:
    """Each workflow's graph with every node an activity with its own timeout, retry policy and
    heartbeat. With `on_skip`, a workflow that cannot be built here (a missing extra, a router) is
    left out and reported, instead of stopping the worker."""
    graphs = {}
    for name, spec in list(specs.items()):
        try:
            builder = _builder(spec, runtime)
        except FlotillaError as exc:
            if on_skip is None:
                raise
            on_skip(name, exc.message)
            del specs[name]
            continue
        for node_name, node in builder.nodes.items():
            runnable = node.runnable
            fn = getattr(runnable, "afunc", None) or getattr(runnable, "func", None)
            if fn is None:
                raise ConfigError(f"workflow {name!r}: node {node_name!r} is not a plain function node; the temporal backend runs function nodes only")
            node.runnable = RunnableCallable(None, _activity_node(fn, spec, node_name, options.heartbeat_s, runtime.runs), name=node_name)
            agent = spec.agents.get(node_name) if spec.agents else None
            tiers = len(tiers_of(agent)) if agent is not None and agent.kind == "model" else 1
            timeout = (agent.timeout_s * tiers + 60) if agent is not None and agent.timeout_s else options.step_timeout_s
            node.metadata = {
                **(node.metadata or {}),
                "execute_in": "activity",
                "start_to_close_timeout": timedelta(seconds=timeout),
                "heartbeat_timeout": timedelta(seconds=options.heartbeat_timeout_s),
                "retry_policy": RetryPolicy(maximum_attempts=options.max_attempts, initial_interval=timedelta(seconds=1)),
            }
            node.retry_policy = None
        graphs[name] = builder
    return graphs


def _beating(method: Callable[..., Any]) -> Callable[..., Any]:
    """A bookkeeping activity that heartbeats while it runs (see `_BOOKKEEPING`'s heartbeat timeout)."""

    @functools.wraps(method)
    async def beating(self: RunActivities, arg: Any) -> Any:
        async with _heartbeating(self.runtime.settings.temporal.heartbeat_s, process_owner()):
            return await method(self, arg)

    return beating


class RunActivities:
    """What the local runner does around the graph, as activities: start, input rails, approvals, finish."""

    def __init__(self, runtime: Runtime, specs: dict[str, WorkflowSpec]) -> None:
        self.runtime, self.runner, self.specs = runtime, runtime.runner, specs

    def _spec(self, workflow: str) -> WorkflowSpec:
        spec = self.specs.get(workflow)
        if spec is None:
            known = ", ".join(sorted(self.specs))
            raise ApplicationError(f"this worker does not run workflow {workflow!r} (it runs: {known}); start one with `flotilla worker --workflow {workflow}`", non_retryable=True)
        return spec

    def _notices(self, spec: WorkflowSpec) -> list[str]:
        notices = []
        for name, agent in spec.agents.items() if spec.agents else ():
            alias = tiers_of(agent)[0] if agent.kind == "model" and tiers_of(agent) else None
            endpoint = self.runtime.settings.models.get(alias or "")
            if alias not in (None, "embedded") and (endpoint is None or not endpoint.configured):
                notices.append(f"model alias {alias!r} has no endpoint configured; agent {name!r} uses the embedded model")
        rail_notices = getattr(self.runner.rails, "notices", None)
        return notices + (list(rail_notices(spec.name)) if rail_notices is not None else [])

    @activity.defn(name="flotilla.prepare_run")
    @_beating
    async def prepare_run(self, request: RunRequest) -> dict[str, Any]:
        spec, runs = self._spec(request.workflow), self.runner.runs
        if request.version and request.version != spec.version():  # the versioned queues keep this from happening
            raise ApplicationError(f"run of workflow {spec.name!r} version {request.version} reached a worker with version {spec.version()}", non_retryable=True)
        record = await asyncio.to_thread(runs.get_run, request.run_id)
        if record is None and request.idempotency_key:  # the key is kept on the run's record (unique)
            await asyncio.to_thread(runs.claim_run, request.run_id, spec.name, spec.version(), request.idempotency_key, request.initiator)
        elif record is not None and record.status == "pending":
            runs._claimed.add(request.run_id)  # claimed by a worker that died before starting it: fill the row in
        if record is None or record.status == "pending":  # a retry of this activity finds its own record
            # The owner says Temporal runs it: local crash recovery must leave the run alone.
            owner = f"{TEMPORAL_OWNER}{activity.info().task_queue}"
            await asyncio.to_thread(functools.partial(runs.start_run, owner=owner), request.run_id, spec.name, spec.version(), request.input, request.initiator)
        with run_context(request.run_id, spec.name):
            try:
                text = raw = self.runner.decode_input(request.input, spec)
                if self.runner.rails is not None:
                    with run_scope(run_policy(spec, request.confidential, pii=False), RunLedger()):
                        text = await self.runner.rails.check(RailPoint.INPUT, text, workflow=spec.name)
            except Exception as exc:  # noqa: BLE001 — bad input or a blocking rail: a kept, typed outcome
                result = RunResult(request.run_id, spec.name, "failed")
                record_failure(result, exc)
                await asyncio.to_thread(runs.finish_run, request.run_id, result.status, [], error=result.error)
                return {"result": result.to_dict()}
        policy = run_policy(spec, request.confidential, pii=text != raw)
        start = {"input": text, "outputs": {}, "steps": [], "confidential": policy.confidential}
        return {"start": start, "max_steps": spec.settings.max_steps, "notices": self._notices(spec), "confidential": policy.confidential}

    @activity.defn(name="flotilla.await_approval")
    @_beating
    async def await_approval(self, waiting: dict[str, Any]) -> dict[str, Any]:
        """The run store says `waiting_approval` with the request as graphs/approval.py keeps it
        (step, what the approver sees, deadline): every front door reads it there."""
        from flotilla.graphs.approval import stamp_request

        request = waiting["approval"] if isinstance(waiting["approval"], dict) else {"step": None, "shows": waiting["approval"]}
        stamped = stamp_request(self._spec(waiting["workflow"]), request)
        await asyncio.to_thread(self.runner.runs.wait_for_approval, waiting["run_id"], waiting["steps"], stamped)
        return stamped

    @activity.defn(name="flotilla.record_decision")
    @_beating
    async def record_decision(self, decided: dict[str, Any]) -> None:
        """The decision in the run store and the audit chain, as the local runner records it."""
        request, answer, runs, run_id = decided["approval"], decided["decision"], self.runner.runs, decided["run_id"]
        if await asyncio.to_thread(runs.claim_approval, run_id, {**request, "decision": answer}):  # once, even if retried
            event = {"event": "decided", "step": request.get("step"), "requested_at": request.get("requested_at"), "why": request.get("why")}
            await asyncio.to_thread(runs.record_approval, run_id, {**event, **answer}, request.get("shows"))

    @activity.defn(name="flotilla.finish_run")
    @_beating
    async def finish_run(self, finish: dict[str, Any]) -> dict[str, Any]:
        spec, runs, run_id = self._spec(finish["workflow"]), self.runner.runs, finish["run_id"]
        existing = await asyncio.to_thread(runs.get_run, run_id)
        if existing is not None and existing.status not in UNFINISHED:  # a retry after the record was written
            return RunResult(run_id, spec.name, existing.status, existing.output, existing.steps, existing.error, finish["notices"]).to_dict()  # type: ignore[arg-type]
        result = RunResult(run_id, spec.name, "failed", steps=list(finish["steps"]), notices=list(finish["notices"]))
        tracer = self.runtime.telemetry.tracer
        with run_context(run_id, spec.name), tracer.start_as_current_span(f"invoke_workflow {spec.name}", start_time=finish["started_ns"], record_exception=False, set_status_on_exception=False) as span:
            span.set_attributes({"gen_ai.operation.name": "invoke_workflow", "gen_ai.workflow.name": spec.name, "flotilla.workflow_version": spec.version(),
                                 "flotilla.sensitivity": "confidential" if finish["confidential"] else spec.settings.sensitivity,
                                 "flotilla.initiator": finish.get("initiator") or "unknown", "flotilla.backend": "temporal"})
            failure = finish.get("failure")
            if failure is not None:
                if failure.get("record"):
                    result.steps.append(failure["record"])
                result.status, result.error = failure["status"], failure["error"]
            else:
                await self._output(spec, finish, result)
            if result.status == "succeeded":
                span.set_status(Status(StatusCode.OK))
            elif result.status != "needs_review":
                span.set_status(Status(StatusCode.ERROR, (result.error or {}).get("message", "")))
                span.set_attribute("error.type", (result.error or {}).get("type", "error"))
            span.set_attribute("flotilla.status", result.status)
        await asyncio.to_thread(runs.finish_run, run_id, result.status, result.steps, output=result.output, error=result.error)
        return result.to_dict()

    async def _output(self, spec: WorkflowSpec, finish: dict[str, Any], result: RunResult) -> None:
        final = finish["final"] or {}
        try:
            output = select_output(spec, final)
            if self.runner.rails is not None:
                errors = [s["error"]["message"] for s in result.steps if isinstance(s.get("error"), dict)]
                with run_scope(run_policy(spec, finish["confidential"], pii=False), RunLedger()), own_messages(errors):
                    output = json.loads(await self.runner.rails.check(RailPoint.OUTPUT, json.dumps(output, ensure_ascii=False), workflow=spec.name))
            result.output, result.status = output, "succeeded"
            if final.get("review"):
                result.status, result.error = "needs_review", review_error(list(final["review"]))
        except Exception as exc:  # noqa: BLE001 — as in the local runner: every failure is a kept outcome
            record_failure(result, exc)


def build_workers(
    client: Client, runtime: Runtime, specs: dict[str, WorkflowSpec], options: TemporalSettings, *, task_queue: str, on_skip: Callable[[str, str], None] | None = None
) -> dict[str, Worker]:
    """Temporal workers running `specs` on `runtime`: one per workflow, on the task queue of its
    version (`versioned_queue`), keyed by that queue."""
    from temporalio.langgraph import LangGraphPlugin
    from temporalio.worker import Worker
    from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

    graphs = run_graphs(specs, runtime, options, on_skip=on_skip)
    activities = RunActivities(runtime, specs)
    workers = {}
    for name, builder in graphs.items():
        queue = versioned_queue(task_queue, name, specs[name].version())
        workers[queue] = Worker(
            client,
            task_queue=queue,
            workflows=[FlotillaRun],
            activities=[activities.prepare_run, activities.await_approval, activities.record_decision, activities.finish_run],
            plugins=[LangGraphPlugin(graphs={name: builder})],
            # flotilla's own modules (state reducers, routers) are deterministic: the sandbox shares them.
            workflow_runner=SandboxedWorkflowRunner(restrictions=SandboxRestrictions.default.with_passthrough_modules("flotilla")),
            max_concurrent_activities=options.max_concurrent_activities,
        )
    return workers
