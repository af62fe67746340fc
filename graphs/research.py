"""The research graph: plan → parallel sub-agents (LangGraph `Send`) → cited report (→ one more round).

    plan ──Send×K──► research ──► write ──(follow-ups, round 1 only)──Send──► research ──► write ─► END

Budgets (the spec's `research:` and `settings:` sections): sub-agents per round (hard cap
`MAX_SUB_AGENTS`), tool calls per sub-agent, a wall-clock deadline, and token / cost ceilings
(enforced by the model client guard, flotilla.agents.models.policy). When one is hit the run finishes
with what it has and the report's `cut` list says what was left out. A sub-agent that fails or
times out becomes a gap in the report, never a failed run. Each sub-agent's start and finish
is a run event (`notice`, then its `step`), so the CLI and the MCP gateway show progress.

Status (graphs/status.py): a report with some gaps is `succeeded` — the gaps are in it. The run is
`needs_review`, with each reason kept, when the lead could not plan (the question went to one
sub-agent as asked), when every sub-agent failed, or when the lead could not write the report
(it is then the sub-agents' findings, unedited): the output exists, but it is not a report a
person would accept as is. An exception (a refused remote call, a bug) is `failed`; a rail's
block is `blocked`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import operator
import time
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Checkpointer, Send
from opentelemetry.trace import Status, StatusCode, Tracer

from flotilla.agents.agent import Agent, AgentOutputInvalid, StepResult
from flotilla.agents.lead import check_citations, report_without_lead, sources_from_calls
from flotilla.agents.models.base import ModelError
from flotilla.agents.models.policy import BudgetExhausted, RemoteModelRefused, current_ledger, current_policy, escalating
from flotilla.graphs.compile import RailsHook, StepFailed
from flotilla.graphs.progress import report_progress
from flotilla.graphs.spec import MAX_SUB_AGENTS, WorkflowSpec
from flotilla.guardrails.base import GuardrailViolation

__all__ = ["ResearchState", "compile_research"]


def _merge(left: dict[str, Any] | None, right: dict[str, Any] | None) -> dict[str, Any]:
    return {**(left or {}), **(right or {})}


class ResearchState(TypedDict, total=False):
    input: str
    outputs: Annotated[dict[str, Any], _merge]
    steps: Annotated[list[dict[str, Any]], operator.add]
    confidential: bool
    plan: list[dict[str, Any]]
    """The sub-questions of the current round."""
    round: int
    deadline_at: float
    """Epoch seconds; kept in the checkpoint so a resumed run keeps its deadline."""
    findings: Annotated[list[dict[str, Any]], operator.add]
    sources: Annotated[dict[str, dict[str, Any]], _merge]
    cuts: Annotated[list[str], operator.add]
    review: Annotated[list[dict[str, str]], operator.add]
    """Why a person must look at the report (planning or synthesis fell back, no sub-agent succeeded)."""


def _emit(message: str, **data: Any) -> None:
    report_progress({"kind": "notice", "message": message, **data})


def _record(agent: Agent, name: str, result: StepResult | None, output: Any, error: BaseException | None, started: float) -> dict[str, Any]:
    record: dict[str, Any] = {
        "agent": name,
        "model": result.model if result else agent.binding.client.name,
        "alias": agent.binding.alias,
        "fallback": agent.binding.fallback,
        "ok": error is None,
        "latency_ms": round((time.perf_counter() - started) * 1000, 1),
        "input_tokens": result.input_tokens if result else 0,
        "output_tokens": result.output_tokens if result else 0,
        "output": output,
        "notes": list(result.notes) if result else [],
    }
    if result is not None and result.tool_calls:
        record["tool_calls"] = result.tool_calls
    if error is not None:
        record["error"] = error.to_dict() if hasattr(error, "to_dict") else {"type": type(error).__name__, "code": "internal_error", "message": str(error)}
    return record


class _Research:
    def __init__(self, spec: WorkflowSpec, agents: dict[str, Agent], tracer: Tracer, rails: RailsHook | None) -> None:
        assert spec.research is not None
        self.spec, self.cfg, self.agents, self.tracer, self.rails = spec, spec.research, agents, tracer, rails
        self.planner = agents[self.cfg.planner]
        self.writer = agents[self.cfg.writer]
        self.specialists = spec.specialist_names
        self.max_sub_agents = min(self.cfg.max_sub_agents, MAX_SUB_AGENTS)

    # -- steps -----------------------------------------------------------------------------

    async def _step(self, agent: Agent, state: dict[str, Any], *, name: str, timeout: float | None, attributes: dict[str, Any] | None = None) -> StepResult:
        """One agent step inside its invoke_agent span, bounded by `timeout`."""
        with self.tracer.start_as_current_span(f"invoke_agent {name}", record_exception=False, set_status_on_exception=False) as span:
            span.set_attributes(
                {
                    "gen_ai.operation.name": "invoke_agent",
                    "gen_ai.agent.name": name,
                    "gen_ai.agent.description": agent.role,
                    "gen_ai.agent.version": agent.version,
                    **agent.model_attributes(),
                    "flotilla.workflow": self.spec.name,
                    "flotilla.model_alias": agent.binding.alias,
                    **(attributes or {}),
                }
            )
            try:
                if timeout is not None and timeout <= 0:
                    raise TimeoutError
                result = await asyncio.wait_for(agent.run(state, self.tracer, rails=self.rails, workflow=self.spec.name), timeout)
            except BaseException as exc:
                span.set_status(Status(StatusCode.ERROR, str(exc) or type(exc).__name__))
                span.set_attribute("error.type", type(exc).__name__)
                raise
            span.set_attributes({"gen_ai.usage.input_tokens": result.input_tokens, "gen_ai.usage.output_tokens": result.output_tokens})
            return result

    def _remaining(self, state: dict[str, Any]) -> float:
        return float(state.get("deadline_at", time.time() + self.cfg.deadline_s)) - time.time()

    # -- nodes -----------------------------------------------------------------------------

    async def plan(self, state: ResearchState) -> dict[str, Any]:
        deadline_at = state.get("deadline_at") or time.time() + self.cfg.deadline_s
        question = state["input"]
        facts = {
            "max_sub_questions": self.max_sub_agents,
            "specialists": {name: self.agents[name].role for name in self.specialists},
        }
        started, cuts = time.perf_counter(), []
        try:
            result = await self._step(self.planner, {"input": question, "outputs": {}, "facts": facts}, name=self.cfg.planner,
                                      timeout=deadline_at - time.time())
        except RemoteModelRefused as exc:  # the policy says refuse: the run refuses, visibly
            raise StepFailed(self.cfg.planner, _record(self.planner, self.cfg.planner, None, None, exc, started), exc) from exc
        except (ModelError, TimeoutError) as exc:
            why = "the deadline passed" if isinstance(exc, TimeoutError) else str(exc)
            subs = [{"question": question, "specialist": self.specialists[0]}]
            cuts.append(f"planning: the lead could not plan ({why}); the question went to one sub-agent as asked")
            record = _record(self.planner, self.cfg.planner, None, None, exc if not isinstance(exc, TimeoutError) else _timeout(why), started)
        else:
            subs = list(result.output["sub_questions"])
            record = _record(self.planner, self.cfg.planner, result, result.output, None, started)
        plan, more = self._tasks(subs, round_=1, cuts=cuts)
        update = {"plan": plan, "round": 1, "deadline_at": deadline_at, "steps": [record], "cuts": more}
        if record["ok"] is False:
            update["review"] = [{"step": self.cfg.planner, "reason": f"the lead could not plan ({why}); the question went to one sub-agent as asked"}]
        return update

    def _tasks(self, subs: list[dict[str, Any]], *, round_: int, cuts: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
        if len(subs) > self.max_sub_agents:
            dropped = subs[self.max_sub_agents :]
            cuts.append(
                f"round {round_}: the plan had {len(subs)} sub-questions; {len(dropped)} not researched (max_sub_agents={self.max_sub_agents}): "
                + "; ".join(s["question"] for s in dropped)
            )
            subs = subs[: self.max_sub_agents]
        tasks = []
        for i, sub in enumerate(subs, start=1):
            specialist = sub.get("specialist")
            if specialist not in self.specialists:
                specialist = self.specialists[(i - 1) % len(self.specialists)]
            tasks.append({"id": f"r{round_}q{i}" if round_ > 1 else f"q{i}", "question": sub["question"], "specialist": specialist, "round": round_})
        return tasks, cuts

    def fan_out(self, state: ResearchState) -> list[Send] | str:
        if not state.get("plan"):
            return "write"
        return [
            Send("research", {"task": task, "input": state["input"], "deadline_at": state["deadline_at"], "total": len(state["plan"])})
            for task in state["plan"]
        ]

    async def research(self, payload: dict[str, Any]) -> dict[str, Any]:
        task, total = payload["task"], payload["total"]
        name = f"{task['specialist']}/{task['id']}"  # no brackets: consoles read them as markup
        agent = self.agents[task["specialist"]]
        agent = dataclasses.replace(agent, max_tool_steps=self.cfg.max_tool_calls + 1)
        remaining = payload["deadline_at"] - time.time()
        timeout = min(remaining, self.cfg.sub_agent_timeout_s) if self.cfg.sub_agent_timeout_s else remaining
        attributes = {"flotilla.research.task": task["id"], "flotilla.research.round": task["round"]}
        _emit(f"sub-agent {name} started: {task['question']}", agent=name, event="sub_agent_started", total=total)
        started = time.perf_counter()
        state = {"input": task["question"], "outputs": {}, "facts": {"overall_question": payload["input"]}}
        result, error, escalated, cuts = None, None, False, []
        try:
            result = await self._step(agent, state, name=name, timeout=timeout, attributes=attributes)
        except GuardrailViolation as exc:  # a blocked step ends the run, as everywhere (DESIGN: guardrails)
            raise StepFailed(name, _record(agent, name, None, None, exc, started), exc) from exc
        except Exception as exc:  # noqa: BLE001 — a failing sub-agent is a gap, not a failed run
            error = exc
        if isinstance(error, (AgentOutputInvalid, ModelError)) and not isinstance(error, (BudgetExhausted, RemoteModelRefused)):
            if self.cfg.escalate and not current_policy().confidential and self.planner.binding.alias != agent.binding.alias:
                frontier = dataclasses.replace(agent, binding=self.planner.binding)
                with escalating(f"{task['specialist']}: {error.code}"):
                    try:
                        result = await self._step(frontier, state, name=name, timeout=payload["deadline_at"] - time.time(),
                                                  attributes={**attributes, "flotilla.escalated": True})
                        error, escalated = None, True
                    except GuardrailViolation as exc:
                        raise StepFailed(name, _record(agent, name, None, None, exc, started), exc) from exc
                    except Exception as exc:  # noqa: BLE001
                        error = exc
        if isinstance(error, TimeoutError):
            error = _timeout(f"sub-agent {name} did not finish within {timeout:.1f}s")
            cuts.append(f"{task['id']}: timed out ({'the run deadline' if timeout >= remaining else 'sub_agent_timeout_s'})")
        elif isinstance(error, BudgetExhausted):
            cuts.append(f"{task['id']}: not researched: {error.message}")
        calls = result.tool_calls if result else []
        sources = sources_from_calls(task["id"], calls, name)
        finding: dict[str, Any] = {**task, "ok": error is None, "escalated": escalated, "tool_calls": len(calls)}
        if result is not None and error is None:
            cited = [f"{task['id']}.{n}" for n in result.output.get("cited_calls", [])]
            finding["answer"] = result.output["answer"]
            finding["sources"] = [s for s in cited if s in sources] or list(sources)
            if len(calls) >= self.cfg.max_tool_calls > 0:
                cuts.append(f"{task['id']}: used all {self.cfg.max_tool_calls} tool calls (max_tool_calls)")
        else:
            finding["error"] = error.message if hasattr(error, "message") else f"{type(error).__name__}: {error}"
            finding["sources"] = []
        record = _record(agent, name, result, result.output if result and error is None else None, error, started)
        _emit(f"sub-agent {name} {'finished' if error is None else 'failed'}", agent=name, event="sub_agent_finished", ok=error is None, total=total)
        return {"findings": [finding], "sources": sources, "steps": [record], "cuts": cuts}

    async def write(self, state: ResearchState) -> dict[str, Any]:
        question, round_ = state["input"], state.get("round", 1)
        findings = [f for f in state.get("findings", [])]
        sources = state.get("sources", {})
        facts = {
            "findings": [
                {
                    "id": f["id"],
                    "question": f["question"],
                    **({"answer": f["answer"]} if f["ok"] else {"failed": f.get("error")}),
                    "sources": [{k: sources[s][k] for k in ("id", "tool", "arguments", "excerpt")} for s in f["sources"] if s in sources],
                }
                for f in findings
            ],
            "may_ask_follow_up": round_ < self.cfg.max_rounds,
        }
        started, cuts, record, review = time.perf_counter(), [], None, []
        report: dict[str, Any] | None = None
        remaining = self._remaining(state)
        if remaining <= 0:
            cuts.append("synthesis: the deadline passed; the report is the sub-agents' findings, unedited")
            report = report_without_lead(findings, "the deadline passed")
            review.append({"step": self.cfg.writer, "reason": "the deadline passed before the lead could write the report; it is the sub-agents' findings, unedited"})
        else:
            try:
                result = await self._step(self.writer, {"input": question, "outputs": {}, "facts": facts}, name=self.cfg.writer, timeout=remaining)
                report = dict(result.output)
                record = _record(self.writer, self.cfg.writer, result, result.output, None, started)
            except RemoteModelRefused as exc:
                raise StepFailed(self.cfg.writer, _record(self.writer, self.cfg.writer, None, None, exc, started), exc) from exc
            except (ModelError, TimeoutError) as exc:
                why = "the deadline passed" if isinstance(exc, TimeoutError) else f"the lead failed: {exc}"
                cuts.append(f"synthesis: {why}; the report is the sub-agents' findings, unedited")
                report = report_without_lead(findings, why)
                review.append({"step": self.cfg.writer, "reason": f"{why}; the report is the sub-agents' findings, unedited"})
                record = _record(self.writer, self.cfg.writer, None, None, exc if not isinstance(exc, TimeoutError) else _timeout(why), started)
        report, citation_notes = check_citations(report, sources)
        cuts += citation_notes
        follow_up = report.pop("follow_up", []) or []
        next_plan: list[dict[str, Any]] = []
        if follow_up and round_ < self.cfg.max_rounds:
            ledger, policy = current_ledger(), current_policy()
            spent = ledger is not None and (
                (policy.max_tokens is not None and ledger.tokens >= policy.max_tokens)
                or (policy.max_cost_usd is not None and ledger.cost_usd >= policy.max_cost_usd)
            )
            if self._remaining(state) <= 0 or spent:
                cuts.append(f"round {round_ + 1}: {len(follow_up)} follow-up question(s) not researched ({'budget spent' if spent else 'deadline passed'})")
            else:
                next_plan, cuts = self._tasks(list(follow_up), round_=round_ + 1, cuts=cuts)
                _emit(f"lead asked for round {round_ + 1}: {len(next_plan)} follow-up sub-question(s)", event="round", round=round_ + 1)
        elif follow_up:
            cuts.append(f"{len(follow_up)} follow-up question(s) not researched (max_rounds={self.cfg.max_rounds})")
        all_cuts = [*state.get("cuts", []), *cuts]
        output = self._output(question, report, findings, sources, all_cuts, rounds=round_)
        if not next_plan and not any(f["ok"] for f in findings):  # the last round: was anything found at all?
            failed = "; ".join(f"{f['id']}: {f.get('error')}" for f in findings) or "no sub-agent ran"
            review.append({"step": "research", "reason": f"every sub-agent failed ({failed})"})
        update: dict[str, Any] = {"outputs": {self.cfg.writer: output}, "cuts": cuts, "plan": next_plan, "round": round_ + (1 if next_plan else 0)}
        if review:
            update["review"] = review
        if record is not None:
            update["steps"] = [{**record, "output": output}]
        return update

    def next_round(self, state: ResearchState) -> list[Send] | str:
        return self.fan_out(state) if state.get("plan") else END

    def _output(self, question: str, report: dict[str, Any], findings: list[dict[str, Any]], sources: dict[str, Any], cuts: list[str], *, rounds: int) -> dict[str, Any]:
        cited = {c for claim in report.get("claims", []) for c in claim.get("citations", [])}
        ledger, policy = current_ledger(), current_policy()
        return {
            "question": question,
            "summary": report.get("summary", ""),
            "claims": report.get("claims", []),
            "gaps": [*report.get("gaps", []), *(f"{f['id']} ({f['question']}): {f.get('error')}" for f in findings if not f["ok"])],
            "sources": {sid: sources[sid] for sid in sorted(cited)},
            "sub_agents": [
                {k: f.get(k) for k in ("id", "question", "specialist", "ok", "error", "escalated", "tool_calls", "sources")} for f in findings
            ],
            "rounds": rounds,
            "cut": cuts,
            "sensitivity": {"confidential": policy.confidential, "reason": policy.reason, "remote_calls": ledger.remote_calls if ledger else None},
            "usage": ledger.to_dict() if ledger else {},
        }


def _timeout(message: str) -> ModelError:
    from flotilla.agents.models.base import ModelTimeout

    return ModelTimeout(message)


def compile_research(
    spec: WorkflowSpec, agents: dict[str, Agent], tracer: Tracer, *, rails: RailsHook | None = None, checkpointer: Checkpointer = None
) -> CompiledStateGraph:
    graph = _Research(spec, agents, tracer, rails)
    builder = StateGraph(ResearchState)
    builder.add_node("plan", graph.plan)
    builder.add_node("research", graph.research)
    builder.add_node("write", graph.write)
    builder.add_edge(START, "plan")
    builder.add_conditional_edges("plan", graph.fan_out, ["research", "write"])
    builder.add_edge("research", "write")
    builder.add_conditional_edges("write", graph.next_round, ["research", END])
    return builder.compile(checkpointer=checkpointer, name=spec.name)
