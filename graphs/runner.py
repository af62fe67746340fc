"""Running a workflow: input checks, input/output rails, a checkpointed LangGraph run, records.

Whatever happens, the run is kept: its record (input, steps, output or error) in the run
store, its state in the checkpointer (so `resume` continues from the last completed step),
and its spans in the trace.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import json
import logging
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import Status, StatusCode

from langgraph.graph.state import CompiledStateGraph

from flotilla.agents.agent import Agent
from flotilla.agents.models.policy import RunLedger, run_scope
from flotilla.agents.models.registry import ModelRegistry
from flotilla.audit.runs import DONE, RAW, RunRecord, RunStore
from flotilla.audit.telemetry import Telemetry
from flotilla.graphs.build import build_agents
from flotilla.graphs.checkpointers import abandon, open_checkpointer
from flotilla.graphs.compile import RailsHook, StepFailed, compile_workflow
from flotilla.graphs.factory import WorkflowContext, compile_python
from flotilla.graphs.outcome import (
    EventSink, RunEvent, RunNotFound, RunNotResumable, RunResult, decode_input, record_failure, run_policy, select_output,
)
from flotilla.graphs.progress import progress_sink
from flotilla.graphs.recovery import Heartbeat, process_owner
from flotilla.graphs.research import compile_research
from flotilla.graphs.spec import WorkflowSpec
from flotilla.graphs.status import FINISHED, review_error
from flotilla.guardrails.base import RailPoint, own_messages

if TYPE_CHECKING:
    from flotilla.graphs.backends.base import Decision
    from flotilla.tools import ToolHub

__all__ = ["WorkflowRunner", "RunResult", "RunEvent", "EventSink", "RunNotFound", "RunNotResumable"]

log = logging.getLogger(__name__)


class WorkflowRunner:
    def __init__(
        self,
        *,
        registry: ModelRegistry,
        telemetry: Telemetry,
        runs: RunStore,
        checkpoint_path: Path,
        max_input_bytes: int,
        rails: RailsHook | None = None,
        tools: ToolHub | None = None,
        cache_dir: Path | None = None,
        checkpoint_url: str | None = None,
        owner: str | None = None,
    ) -> None:
        self.registry = registry
        self.cache_dir = cache_dir
        """Where trained routers are kept (graphs/routed.py); None: train in memory."""
        self.telemetry = telemetry
        self.runs = runs
        self.checkpoint_path = checkpoint_path
        self.checkpoint_url = checkpoint_url
        """postgresql://… for LangGraph's Postgres checkpointer (graphs/checkpointers.py); None: SQLite at checkpoint_path."""
        self.owner = owner or process_owner()
        """Recorded on each run this runner starts or resumes, kept fresh by the heartbeat (graphs/recovery.py)."""
        self.heartbeat = Heartbeat(runs, self.owner)
        self.stopping = False
        """Set when the process shuts down (`flotilla serve` on SIGTERM): a run cancelled then is left
        `interrupted`, for the next process to resume, not `cancelled` as a person's cancel is."""
        self.max_input_bytes = max_input_bytes
        self.rails = rails
        self.tools = tools
        # One checkpointer connection and one compiled graph per workflow, reused across runs:
        # compiling and reconnecting per run cost several times the orchestration itself.
        self._saver: Any = None  # AsyncSqliteSaver or AsyncPostgresSaver
        self._saver_cm: Any = None
        self._saver_loop: asyncio.AbstractEventLoop | None = None
        self._saver_lock: asyncio.Lock | None = None  # first runs arriving together open ONE checkpointer
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        self._compiled: dict[tuple[str, str], tuple[dict[str, Agent], CompiledStateGraph]] = {}

    async def __aenter__(self) -> WorkflowRunner:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close MCP sessions and the checkpointer connection (its worker thread would otherwise
        outlive the loop)."""
        await self.heartbeat.stop()
        if self.tools is not None:
            await self.tools.aclose()
        if self._saver_cm is not None:
            cm, self._saver_cm, self._saver = self._saver_cm, None, None
            self._compiled.clear()
            await cm.__aexit__(None, None, None)

    async def _open_checkpointer(self) -> None:
        loop = asyncio.get_running_loop()
        if self._saver_lock is None or self._lock_loop is not loop:  # a lock belongs to one loop
            self._saver_lock, self._lock_loop = asyncio.Lock(), loop
        async with self._saver_lock:
            if self._saver is not None and self._saver_loop is not loop:
                abandon(self._saver)  # the loop it belonged to is gone
                self._saver = self._saver_cm = None
                self._compiled.clear()
            if self._saver is None:
                cm, saver = await open_checkpointer(self.checkpoint_url or self.checkpoint_path)
                self._saver_cm, self._saver, self._saver_loop = cm, saver, loop
            self.heartbeat.ensure_started()

    async def _graph(self, spec: WorkflowSpec, version: str) -> tuple[dict[str, Agent], CompiledStateGraph]:
        await self._open_checkpointer()
        key = (str(spec.source or spec.factory or spec.name), version)
        if key not in self._compiled:
            agents = build_agents(spec, self.registry, self.tools)
            if self.rails is not None:
                self.rails.configure_workflow(spec.name, spec.rails)
            if spec.kind == "python":  # the factory builds its agents through the context
                ctx = WorkflowContext(spec.name, self.registry, self.telemetry.tracer, rails=self.rails, tools=self.tools)
                graph = compile_python(spec, ctx, checkpointer=self._saver)
                agents = ctx.agents
            else:
                if spec.kind == "research":
                    graph = compile_research(spec, agents, self.telemetry.tracer, rails=self.rails, checkpointer=self._saver)
                else:  # tool nodes call the runtime's MCP hub
                    graph = compile_workflow(spec, agents, self.telemetry.tracer, rails=self.rails, checkpointer=self._saver, tools=self.tools)
            self._compiled[key] = (agents, graph)
        return self._compiled[key]

    def decode_input(self, data: str | bytes, spec: WorkflowSpec) -> str:
        """The input as text, or InvalidInput saying what is wrong with it."""
        return decode_input(data, spec.input.max_bytes or self.max_input_bytes)

    async def run(
        self,
        spec: WorkflowSpec,
        data: str | bytes,
        *,
        run_id: str | None = None,
        initiator: str | None = None,
        on_event: EventSink | None = None,
        confidential: bool = False,
    ) -> RunResult:
        """`confidential`: the run flag; with it (as with `settings.sensitivity: confidential`, or
        the input rail finding PII) no model call of the run may leave local models."""
        if spec.kind == "router":  # decide where the request goes, then run that workflow as this run
            from flotilla.graphs.routed import run_routed

            return await run_routed(self, spec, data, run_id=run_id, initiator=initiator, on_event=on_event, confidential=confidential)
        run_id = run_id or uuid.uuid4().hex
        raw_text = data if isinstance(data, str) else data.decode("utf-8", errors="replace")
        # Off the event loop, and only the row's commit (fsync) on the run's path: its `started`
        # audit record follows in the background (recoverable from the row: record_repair.py).
        await self._in_store(self.runs.start_run, run_id, spec.name, spec.version(), raw_text, initiator, owner=self.owner, defer_audit=True)
        return await self._execute(spec, run_id, data, initiator=initiator, on_event=on_event, resume=False, confidential=confidential)

    async def resume(self, spec: WorkflowSpec, run_id: str, *, on_event: EventSink | None = None) -> RunResult:
        record = self.runs.get_run(run_id)
        if record is None:
            raise RunNotFound(f"no run {run_id!r}; `flotilla audit runs` lists runs")
        if record.status in FINISHED:  # the graph ran to its end: nothing to continue
            return RunResult(run_id, record.workflow, record.status, record.output, record.steps, record.error, [f"run already finished: {record.status}"])  # type: ignore[arg-type]
        if record.status == "waiting_approval":  # resuming would only ask again
            raise RunNotResumable(f"run {run_id} is waiting for approval; decide it with `flotilla runs approve|reject {run_id}`")
        if spec.kind == "router":  # continue the workflow the router handed the run to
            from flotilla.graphs.routed import routed_target

            spec = routed_target(spec, record)
        # A finished run's stored input follows the content policy; its checkpoint holds what the graph ran on.
        data = record.input if record.content in (RAW, "full") else await self._checkpointed_input(spec, record)
        self.runs.mark_running(run_id, owner=self.owner)
        from flotilla.graphs.approval import claimed_decision  # a decision its process died before applying

        command = await claimed_decision((await self._graph(spec, spec.version()))[1], record)
        return await self._execute(spec, run_id, data, initiator=record.initiator, on_event=on_event, resume=True, command=command)

    async def decide(self, spec: WorkflowSpec, run_id: str, decision: Decision, *, on_event: EventSink | None = None) -> RunResult:
        """Approve (maybe with edits: the run goes on) or reject (it ends `blocked`) a run waiting
        for approval; RunNotFound, RunNotWaiting, ApprovalForbidden before anything changes."""
        from flotilla.graphs.approval import decide_run

        return await decide_run(self, spec, run_id, decision, on_event=on_event)

    async def _checkpointed_input(self, spec: WorkflowSpec, record: RunRecord) -> str:
        _, graph = await self._graph(spec, spec.version())
        text = (await graph.aget_state({"configurable": {"thread_id": record.run_id}})).values.get("input")
        if not text:
            raise RunNotResumable(
                f"run {record.run_id} ended before its first step and its input is not kept (audit content policy "
                f"{record.content!r}); start it again with `flotilla run`"
            )
        return text

    async def _execute(
        self,
        spec: WorkflowSpec,
        run_id: str,
        data: str | bytes,
        *,
        initiator: str | None,
        on_event: EventSink | None,
        resume: bool,
        confidential: bool = False,
        routed: dict[str, Any] | None = None,
        command: Any = None,
    ) -> RunResult:
        """`routed`: the route step of a router run handing this run to `spec` (graphs/routed.py).
        `command`: a LangGraph `Command(resume=...)` carrying an approval decision."""
        from flotilla.graphs.approval import ApprovalPending, review_request, stamp_request

        result = RunResult(run_id, spec.name, "failed")

        async def emit(kind: str, **payload: Any) -> None:
            if on_event is not None:
                outcome = on_event(RunEvent(kind, run_id, payload))  # type: ignore[arg-type]
                if inspect.isawaitable(outcome):
                    await outcome

        tracer = self.telemetry.tracer
        with tracer.start_as_current_span(f"invoke_workflow {spec.name}", record_exception=False, set_status_on_exception=False) as span:
            span.set_attributes(
                {
                    "gen_ai.operation.name": "invoke_workflow",
                    "gen_ai.workflow.name": spec.name,
                    "gen_ai.conversation.id": run_id,  # a run is the conversation; every child span inherits it
                    "flotilla.run_id": run_id,
                    "flotilla.workflow": spec.name,
                    "flotilla.workflow_version": spec.version(),
                    "flotilla.sensitivity": spec.settings.sensitivity,
                    "flotilla.initiator": initiator or "unknown",
                    "flotilla.resumed": resume,
                }
            )
            try:
                await emit("started", workflow=spec.name, resumed=resume)
                if routed is not None and not resume:
                    result.steps.append(routed)
                    await emit("step", **routed)
                agents, graph = await self._graph(spec, spec.version())
                for agent in agents.values():
                    if agent.binding.fallback:
                        notice = f"model alias {agent.binding.alias!r} has no endpoint configured; agent {agent.name!r} uses the embedded model"
                        if notice not in result.notices:
                            result.notices.append(notice)
                            await emit("notice", message=notice)
                rail_notices = getattr(self.rails, "notices", None)  # engines off for an extra not installed
                for notice in rail_notices(spec.name) if rail_notices is not None else []:
                    if notice not in result.notices:
                        result.notices.append(notice)
                        await emit("notice", message=notice)
                text = self.decode_input(data, spec)
                raw = text
                config = {"configurable": {"thread_id": run_id}, "recursion_limit": spec.settings.max_steps}
                # The run flag is kept in the checkpoint, so a resumed confidential run stays
                # confidential — read before the input rails, which obey it too.
                resumed_from = (await graph.aget_state(config)).values if resume else None
                if resumed_from:
                    result.steps = list(resumed_from.get("steps", []))
                    confidential = confidential or bool(resumed_from.get("confidential"))
                ledger = RunLedger()
                if self.rails is not None:
                    # Rails obey the run's locality policy as agents do: a rail engine's model call
                    # goes through the same guard (and PII the input rail finds applies at once).
                    with run_scope(run_policy(spec, confidential, pii=False), ledger):
                        text = await self.rails.check(RailPoint.INPUT, text, workflow=spec.name)
                start: dict[str, Any] | None = None if resumed_from else {"input": text, "outputs": {}, "steps": [routed] if routed else [], "confidential": confidential}
                policy = run_policy(spec, confidential, pii=text != raw)
                if start is not None:  # checkpointed: a resumed run (whose input was redacted) stays as confidential
                    start["confidential"] = policy.confidential
                if policy.confidential:
                    span.set_attributes({"flotilla.sensitivity": "confidential", "flotilla.sensitivity.reason": policy.reason})
                final: dict[str, Any] = {}
                pending: list[asyncio.Future[None]] = []

                def on_progress(payload: dict[str, Any]) -> None:  # progress a node reports (research sub-agents)
                    payload = dict(payload)
                    pending.append(asyncio.ensure_future(emit(payload.pop("kind", "notice"), **payload)))

                with run_scope(policy, ledger), progress_sink(on_progress):
                    try:
                        paused = None
                        async for mode, chunk in graph.astream(start if command is None else command, config, stream_mode=["updates", "values"]):
                            if mode == "values":
                                final = chunk
                                continue
                            for node, node_update in chunk.items():
                                if node == "__interrupt__":  # an approval gate called interrupt()
                                    paused = node_update[0].value
                                    continue
                                for step in (node_update or {}).get("steps", []):
                                    # A step that finished before a crash but after its checkpoint is in
                                    # the resumed state already (its kept writes), and LangGraph replays it.
                                    if resume and step in result.steps:
                                        continue
                                    result.steps.append(step)
                                    await emit("step", **step)
                    finally:
                        span.set_attributes(ledger.span_attributes())
                        await asyncio.gather(*pending, return_exceptions=True)
                if paused is not None:
                    raise ApprovalPending(paused)
                output = select_output(spec, final)
                if self.rails is not None:
                    # The output may repeat failed steps' error messages (research gaps): flotilla's
                    # own text, which redaction must leave readable.
                    errors = [step["error"]["message"] for step in result.steps if isinstance(step.get("error"), dict)]
                    with run_scope(policy, ledger), own_messages(errors):
                        checked = await self.rails.check(RailPoint.OUTPUT, json.dumps(output, ensure_ascii=False), workflow=spec.name)
                    span.set_attributes(ledger.span_attributes())  # now with the output rails' model calls
                    output = json.loads(checked)
                result.output, result.status = output, "succeeded"
                review = list(final.get("review") or [])
                if review:  # the work finished, but not so a person would accept it as is
                    result.status, result.error = "needs_review", review_error(review)
                    if (request := review_request(spec, result)) is not None:  # settings.approval_on_review
                        raise ApprovalPending(request)
            except ApprovalPending as exc:  # nothing is lost: the checkpoint holds the run while it waits
                result.status, result.approval = "waiting_approval", stamp_request(spec, exc.request)
            except asyncio.CancelledError:
                if self.stopping:  # the process stops, not the run: recovery resumes it from its checkpoint
                    result.status = "interrupted"
                    result.error = {"type": "Interrupted", "code": "interrupted", "message": "the server stopped during the run; the next one to start resumes it"}
                    span.set_attribute("flotilla.status", result.status)
                    self.runs.interrupt_run(run_id, result.error)
                    raise
                # Ctrl-C or an MCP client's cancellation: keep the run's record honest, then let it unwind.
                result.status = "cancelled"
                result.error = {"type": "Cancelled", "code": "cancelled", "message": "the run was cancelled before it finished; resume it to continue"}
                span.set_attribute("flotilla.status", result.status)
                self.runs.finish_run(run_id, result.status, result.steps, error=result.error)
                raise
            except StepFailed as exc:
                result.steps.append(exc.record)
                await emit("step", **exc.record)
                record_failure(result, exc.cause)
            except Exception as exc:  # noqa: BLE001 — every failure becomes a kept, typed run outcome
                record_failure(result, exc)
            if result.status == "succeeded":
                span.set_status(Status(StatusCode.OK))
            elif result.status == "waiting_approval":
                span.set_attribute("flotilla.approval.step", str(result.approval["step"]))
            elif result.status == "needs_review":  # not an error: the span stays UNSET, the status says why
                span.set_attribute("flotilla.review.reasons", [f"{r['step']}: {r['reason']}" for r in result.error["reasons"]])
            else:
                span.set_status(Status(StatusCode.ERROR, (result.error or {}).get("message", "")))
                span.set_attribute("error.type", (result.error or {}).get("type", "error"))
            span.set_attribute("flotilla.status", result.status)
        # No flush here: spans reach the audit store and OTLP in the background (redaction can
        # take seconds); the runtime flushes on shutdown.
        if result.status == "waiting_approval":
            await self._in_store(self.runs.wait_for_approval, run_id, result.steps, result.approval)
            await emit("approval", approval=result.approval)
            return result
        # Off the loop, and only the row's commit on the run's path: the `finished` audit record
        # follows in the background (repairable from the row, as `started`'s is).
        await self._in_store(self.runs.finish_run, run_id, result.status, result.steps, output=result.output, error=result.error, defer_audit=True)
        if result.status in DONE:  # its outcome is on disk: nothing will resume it or re-send its calls
            cleanup = []
            if self._saver is not None:
                cleanup.append(self._forget_checkpoint(run_id))
            journal = getattr(self.tools, "journal", None)
            if journal is not None and (resume or journal.journaled_here(run_id)):  # else it has no entries
                cleanup.append(self._in_store(journal.forget_run, run_id))
            await asyncio.gather(*cleanup)  # two databases, two threads: side by side
        await emit("finished", status=result.status, error=result.error)
        return result

    async def _in_store(self, write: Any, *args: Any, **kwargs: Any) -> Any:
        """A run-store write on the store's own threads (as asyncio.to_thread, context included):
        a burst of runs' starts and finishes shares commits instead of queueing for the loop's few
        default threads, one fsync after another."""
        call = functools.partial(contextvars.copy_context().run, functools.partial(write, *args, **kwargs))
        return await asyncio.get_running_loop().run_in_executor(getattr(self.runs, "executor", None), call)

    async def _forget_checkpoint(self, run_id: str) -> None:
        """Nothing is left to resume: the checkpoint's raw state goes (retention of checkpoints)."""
        try:
            await self._saver.adelete_thread(run_id)  # type: ignore[union-attr]
        except Exception:  # noqa: BLE001 — the run's outcome stands; `audit prune` removes it later
            log.warning("could not delete the checkpoint of run %s", run_id, exc_info=True)
