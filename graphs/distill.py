"""Fine-tuning data for a workflow's agent: from its past runs (the audit trail) or from a
labelled dataset, as chat JSONL (flotilla.agents.finetune.data).

From runs: the prompt is the first model call the agent made in the run, as its chat span
recorded it (`gen_ai.input.messages`: system + user, before any repair or escalation turn),
so it is exactly what the agent sent — redacted when the audit content policy is `redacted`,
absent when it is `off` (such runs are counted, not exported). The answer is the step's
accepted output as the run record keeps it (after the agent's policy hook corrected it).

Which runs: every run where the agent's step passed (`all`), or only `verified` (the run
succeeded and every check on the answer passed), `approved` (a person approved the run), or
`escalated` (a later tier answered after the first one failed: teacher labels).

From a dataset: each case's expected output for the agent, with the prompt the agent builds
for the case's input (`Agent.messages`, the same code a run uses).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import select

from flotilla.agents.agent import Agent
from flotilla.agents.finetune.data import conversation
from flotilla.agents.models.registry import Binding
from flotilla.agents.output import OutputMismatch
from flotilla.audit.errors import ConfigError
from flotilla.audit.runs import RunStore, runs
from flotilla.audit.store import AuditStore
from flotilla.graphs.build import load_output_schema, resolve_ref
from flotilla.graphs.spec import WorkflowSpec

__all__ = ["Selection", "ExportReport", "NothingToExport", "examples_from_runs", "examples_from_dataset", "prompt_agent", "SELECTIONS"]

Selection = Literal["all", "verified", "approved", "escalated"]
SELECTIONS: tuple[str, ...] = ("all", "verified", "approved", "escalated")


class NothingToExport(ConfigError):
    """No run (or case) gave an example for the agent."""

    code = "nothing_to_export"


@dataclass(slots=True)
class ExportReport:
    runs: int = 0
    """Runs of the workflow looked at."""
    examples: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    """Why runs gave no example: `no step`, `step failed`, `not verified`, `not escalated`, `prompt not kept`, …"""

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def examples_from_runs(
    run_store: RunStore,
    audit: AuditStore,
    workflow: str,
    agent: str,
    *,
    since: datetime | None = None,
    only: Selection = "all",
) -> tuple[list[dict[str, Any]], ExportReport]:
    """Chat examples of `agent`'s accepted answers in `workflow`'s runs, oldest first."""
    if only not in SELECTIONS:
        raise ConfigError(f"--only must be one of {', '.join(SELECTIONS)}, not {only!r}")
    report = ExportReport()
    examples = []
    for run_id, status in _runs(run_store, workflow, since):
        report.runs += 1
        record = run_store.get_run(run_id)
        step = next((s for s in (record.steps if record else []) if s.get("agent") == agent), None)
        if step is None:
            report.skip("the agent did not run")
            continue
        if not step.get("ok", True) or step.get("output") is None:
            report.skip("no accepted answer (step failed, or content policy off)")
            continue
        attempts = step.get("attempts") or []
        if only == "verified" and (status != "succeeded" or not all(v.get("passed") for v in step.get("verification") or [])):
            report.skip("not verified")
            continue
        if only == "escalated" and not (len(attempts) > 1 and attempts[-1].get("ok") and not attempts[0].get("ok")):
            report.skip("not escalated")
            continue
        records = audit.run_records(run_id)
        if only == "approved" and not any(r.kind == "approval" and _approved(r.payload) for r in records):
            report.skip("not approved")
            continue
        prompt = _first_prompt(records, agent)
        if prompt is None:
            report.skip("prompt not kept (audit content policy off)")
            continue
        examples.append(conversation(prompt, step["output"]))
        report.examples += 1
    return examples, report


def _runs(run_store: RunStore, workflow: str, since: datetime | None) -> Iterator[tuple[str, str]]:
    stmt = select(runs.c.run_id, runs.c.status).where(runs.c.workflow == workflow)
    if since is not None:
        stmt = stmt.where(runs.c.started_at >= since)
    with run_store.engine.connect() as conn:
        yield from conn.execute(stmt.order_by(runs.c.started_at, runs.c.run_id)).all()


def _approved(payload: dict[str, Any]) -> bool:
    return payload.get("approved") is True or str(payload.get("decision", "")).lower() in ("approve", "approved")


def _first_prompt(records: list, agent: str) -> list[dict[str, str]] | None:
    """The messages of the agent's first chat call in the run, up to its first reply."""
    chats = [
        r.payload for r in records
        if r.kind == "span" and (a := r.payload.get("attributes") or {}).get("gen_ai.operation.name") == "chat"
        and a.get("gen_ai.agent.name") == agent
    ]
    for span in sorted(chats, key=lambda s: s.get("start") or 0):
        raw = span["attributes"].get("gen_ai.input.messages")
        if not isinstance(raw, str):
            return None
        try:
            messages = json.loads(raw)
        except json.JSONDecodeError:
            return None
        prompt = []
        for message in messages:
            if message.get("role") == "assistant":
                break
            prompt.append({"role": message["role"], "content": message["content"]})
        return prompt or None
    return None


def prompt_agent(spec: WorkflowSpec, name: str) -> Agent:
    """`name` as its workflow declares it, to build prompts with (it has no model: calling one is a bug)."""
    declared = spec.agents.get(name)
    if declared is None or declared.kind != "model":
        models = ", ".join(n for n, a in spec.agents.items() if a.kind == "model") or "none"
        raise ConfigError(f"workflow {spec.name!r} has no model agent {name!r} (its model agents: {models})")
    return Agent(
        name=name,
        role=declared.role,
        instructions=(spec.base_dir / declared.instructions).read_text(encoding="utf-8"),
        output=load_output_schema(declared.output_schema, spec.base_dir),
        binding=Binding(alias="export", client=None, fallback=False),  # type: ignore[arg-type]
        reads=tuple(declared.reads) if declared.reads is not None else None,
        include_input=declared.include_input,
        context=resolve_ref(declared.context) if declared.context else None,
        max_tokens=declared.max_tokens,  # the budget the workflow gives the step (benches generate with it)
    )


def examples_from_dataset(spec: WorkflowSpec, agent: str, path: Path) -> list[dict[str, Any]]:
    """Each labelled case (`{"id", "input", "expected": {agent: {...}}}` per line) as a chat example."""
    built = prompt_agent(spec, agent)
    if not path.is_file():
        raise ConfigError(f"{path}: no such dataset file")
    examples = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            case = json.loads(line)
            expected = case["expected"][agent]
            text = case["input"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ConfigError(f'{path}:{number}: needs {{"input": …, "expected": {{"{agent}": {{…}}}}}}') from None
        try:  # through the schema: its field order and types, as the model will be asked to answer
            answer = built.output.dump(built.output.parse(json.dumps(expected)))
        except OutputMismatch as exc:
            raise ConfigError(f"{path}:{number}: expected.{agent} does not match {built.output.name}: {exc}") from None
        # Earlier agents' outputs only where the agent names them in `reads:` (a case labels them partly).
        outputs = {k: v for k, v in case["expected"].items() if built.reads and k in built.reads}
        examples.append(conversation(built.messages({"input": text, "outputs": outputs}), answer))
    if not examples:
        raise NothingToExport(f"{path}: no cases in it")
    return examples
