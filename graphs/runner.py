"""Running a workflow: input checks, input/output rails, a checkpointed LangGraph run, records.

Whatever happens, the run is kept: its record (input, steps, output or error) in the run
store, its state in the checkpointer (so `resume` continues from the last completed step),
and its spans in the trace.
"""

from __future__ import annotations

import inspect
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from opentelemetry.trace import Status, StatusCode

from agents.models.registry import ModelRegistry
from audit.errors import FlotillaError, InvalidInput
from audit.runs import RunStore
from audit.telemetry import Telemetry
from graphs.build import build_agents
from graphs.compile import RailsHook, StepFailed, compile_workflow
from graphs.spec import WorkflowSpec
from guardrails.base import GuardrailViolation, RailPoint

__all__ = ["WorkflowRunner", "RunResult", "RunEvent", "RunNotFound"]

log = logging.getLogger(__name__)

Status_ = Literal["succeeded", "failed", "blocked"]


class RunNotFound(FlotillaError):
    code = "run_not_found"


@dataclass(frozen=True, slots=True)
class RunEvent:
    kind: Literal["started", "notice", "step", "finished"]
    run_id: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class RunResult:
    run_id: str
    workflow: str
    status: Status_
    output: Any = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None
    notices: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "workflow": self.workflow,
            "status": self.status,
            "output": self.output,
            "steps": self.steps,
            "error": self.error,
            "notices": self.notices,
        }


EventSink = Callable[[RunEvent], Awaitable[None] | None]


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
    ) -> None:
        self.registry = registry
        self.telemetry = telemetry
        self.runs = runs
        self.checkpoint_path = checkpoint_path
        self.max_input_bytes = max_input_bytes
        self.rails = rails

    def decode_input(self, data: str | bytes, spec: WorkflowSpec) -> str:
        """The input as text, or InvalidInput saying what is wrong with it."""
        limit = spec.input.max_bytes or self.max_input_bytes
        raw = data.encode("utf-8") if isinstance(data, str) else data
        if len(raw) > limit:
            raise InvalidInput(f"input is {len(raw):,} bytes; the limit is {limit:,} (raise `input.max_bytes` in the workflow or FLOTILLA_MAX_INPUT_BYTES)")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"input is not UTF-8 text (byte {exc.start} is 0x{raw[exc.start]:02x}); convert it to UTF-8 text first") from None
        if not text.strip():
            raise InvalidInput("input is empty; give the document text as a file or on stdin")
        return text

    async def run(
        self,
        spec: WorkflowSpec,
        data: str | bytes,
        *,
        run_id: str | None = None,
        initiator: str | None = None,
        on_event: EventSink | None = None,
    ) -> RunResult:
        run_id = run_id or uuid.uuid4().hex
        version = spec.version()
        raw_text = data if isinstance(data, str) else data.decode("utf-8", errors="replace")
        self.runs.start_run(run_id, spec.name, version, raw_text, initiator)
        return await self._execute(spec, run_id, data, initiator=initiator, on_event=on_event, resume=False)

    async def resume(self, spec: WorkflowSpec, run_id: str, *, on_event: EventSink | None = None) -> RunResult:
        record = self.runs.get_run(run_id)
        if record is None:
            raise RunNotFound(f"no run {run_id!r}; `flotilla audit runs` lists runs")
        if record.status == "succeeded":
            return RunResult(run_id, record.workflow, "succeeded", record.output, record.steps, None, ["run already succeeded"])
        self.runs.mark_running(run_id)
        return await self._execute(spec, run_id, record.input, initiator=record.initiator, on_event=on_event, resume=True)

    async def _execute(
        self, spec: WorkflowSpec, run_id: str, data: str | bytes, *, initiator: str | None, on_event: EventSink | None, resume: bool
    ) -> RunResult:
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
                    "flotilla.run_id": run_id,
                    "flotilla.workflow": spec.name,
                    "flotilla.workflow_version": spec.version(),
                    "flotilla.sensitivity": spec.settings.sensitivity,
                    "flotilla.initiator": initiator or "unknown",
                    "flotilla.resumed": resume,
                }
            )
            await emit("started", workflow=spec.name, resumed=resume)
            try:
                agents = build_agents(spec, self.registry)
                for agent in agents.values():
                    if agent.binding.fallback:
                        notice = f"model alias {agent.binding.alias!r} has no endpoint configured; agent {agent.name!r} uses the embedded model"
                        if notice not in result.notices:
                            result.notices.append(notice)
                            await emit("notice", message=notice)
                text = self.decode_input(data, spec)
                if self.rails is not None:
                    text = await self.rails.check(RailPoint.INPUT, text, workflow=spec.name)
                async with AsyncSqliteSaver.from_conn_string(str(self.checkpoint_path)) as saver:
                    graph = compile_workflow(spec, agents, tracer, rails=self.rails, checkpointer=saver)
                    config = {"configurable": {"thread_id": run_id}, "recursion_limit": spec.settings.max_steps}
                    snapshot = await graph.aget_state(config)
                    result.steps = list(snapshot.values.get("steps", [])) if snapshot.values else []
                    start = None if (resume and snapshot.values) else {"input": text, "outputs": {}, "steps": []}
                    async for update in graph.astream(start, config, stream_mode="updates"):
                        for node_update in update.values():
                            for step in (node_update or {}).get("steps", []):
                                result.steps.append(step)
                                await emit("step", **step)
                    final = (await graph.aget_state(config)).values
                output = self._select_output(spec, final)
                if self.rails is not None:
                    checked = await self.rails.check(RailPoint.OUTPUT, json.dumps(output, ensure_ascii=False), workflow=spec.name)
                    output = json.loads(checked)
                result.output, result.status = output, "succeeded"
            except StepFailed as exc:
                result.steps.append(exc.record)
                await emit("step", **exc.record)
                self._fail(result, exc.cause)
            except Exception as exc:  # noqa: BLE001 — every failure becomes a kept, typed run outcome
                self._fail(result, exc)
            if result.status == "succeeded":
                span.set_status(Status(StatusCode.OK))
            else:
                span.set_status(Status(StatusCode.ERROR, (result.error or {}).get("message", "")))
                span.set_attribute("error.type", (result.error or {}).get("type", "error"))
            span.set_attribute("flotilla.status", result.status)
        self.runs.finish_run(run_id, result.status, result.steps, output=result.output, error=result.error)
        self.telemetry.flush()
        await emit("finished", status=result.status, error=result.error)
        return result

    @staticmethod
    def _select_output(spec: WorkflowSpec, values: dict[str, Any]) -> Any:
        outputs = values.get("outputs") or {}
        if spec.output is not None:
            return outputs.get(spec.output)
        steps = values.get("steps") or []
        return steps[-1]["output"] if steps else None

    @staticmethod
    def _fail(result: RunResult, exc: BaseException) -> None:
        if isinstance(exc, GuardrailViolation):
            result.status = "blocked"
        else:
            result.status = "failed"
        if isinstance(exc, FlotillaError):
            result.error = exc.to_dict()
        else:
            log.exception("run %s failed with an unexpected error", result.run_id, exc_info=exc)
            result.error = {"type": "InternalError", "code": "internal_error", "message": f"{type(exc).__name__}: {exc}"}
