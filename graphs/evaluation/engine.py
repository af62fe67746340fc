"""Running an eval: every case under every config, through the real workflow runner.

Each finished case is appended to `<out>/results.jsonl` at once, so an interrupted eval keeps
everything it finished and a re-run skips it. A result is reused only while its config's
fingerprint and the case's content are unchanged.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flotilla.agents.models.policy import PriceTable
from flotilla.graphs.evaluation.cases import EvalCase
from flotilla.graphs.evaluation.overlay import EvalConfig
from flotilla.graphs.evaluation.scorers import ScorerSet

if TYPE_CHECKING:
    from flotilla.graphs.runner import RunResult, WorkflowRunner

__all__ = ["ResultsLog", "run_config", "case_digest", "EVAL_INITIATOR"]

EVAL_INITIATOR = "eval"
"""Eval runs are recorded with initiator `eval:<eval id>:<config>`: the marker in the run store
and on every span (`flotilla.initiator`), so stats and the audit page can tell them apart."""


def case_digest(case: EvalCase) -> str:
    blob = json.dumps([case.input, case.expected], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class ResultsLog:
    """`results.jsonl` in the out dir: one finished (config, case) a line, appended as it finishes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def finished(self) -> dict[tuple[str, str, str], dict[str, Any]]:
        """Finished results by (config, fingerprint, case id); a torn last line is ignored."""
        found: dict[tuple[str, str, str], dict[str, Any]] = {}
        if not self.path.is_file():
            return found
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
                found[(record["config"], record["fingerprint"], record["case_id"])] = record
            except (ValueError, KeyError, TypeError):
                continue
        return found

    def append(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
            out.flush()


def _outputs(result: RunResult) -> dict[str, Any]:
    outputs: dict[str, Any] = {}
    for step in result.steps:
        if step.get("ok") and step.get("agent") and isinstance(step.get("output"), dict):
            outputs[step["agent"]] = step["output"]
    return outputs


def outcome(config: EvalConfig, case: EvalCase, result: RunResult, latency_ms: float, scorers: ScorerSet, prices: PriceTable) -> dict[str, Any]:
    """What the report needs of one run: scores per field and the run's quality-loop figures."""
    outputs = _outputs(result)
    actual: dict[str, Any] = {}
    scores: dict[str, float] = {}
    for name, expected in case.fields().items():
        agent, field = name.split(".", 1)
        value = (outputs.get(agent) or {}).get(field)
        actual[name] = value
        scores[name] = round(scorers.for_field(name, expected)(expected, value), 4)
    model_steps = [s for s in result.steps if s.get("model")]
    cost = sum(prices.cost(s.get("tier") or s.get("alias") or "", s.get("input_tokens", 0), s.get("output_tokens", 0)) for s in model_steps)
    # First tier's verdict: its attempt is the first one recorded (later ones are escalations).
    first_attempts = [(s.get("attempts") or [{"ok": s.get("ok")}])[0] for s in model_steps]
    return {
        "config": config.name,
        "fingerprint": config.fingerprint,
        "case_id": case.id,
        "case_digest": case_digest(case),
        "tags": case.tags,
        "run_id": result.run_id,
        "status": result.status,
        "error": (result.error or {}).get("message"),
        "latency_ms": round(latency_ms, 1),
        "input_tokens": sum(s.get("input_tokens", 0) for s in model_steps),
        "output_tokens": sum(s.get("output_tokens", 0) for s in model_steps),
        "cost_usd": cost,
        "model_steps": len(model_steps),
        "first_try_valid": sum(1 for s in model_steps if _first_try_valid(s)),
        "first_tier_verified": sum(1 for a in first_attempts if a.get("ok")),
        "escalated": any(len(s.get("attempts") or []) > 1 for s in model_steps),
        "scores": scores,
        "actual": actual,
    }


def _first_try_valid(step: dict[str, Any]) -> bool:
    """The first tier's first reply fitted the output schema (verification aside): no repair,
    no schema or endpoint error recorded for that attempt."""
    attempts = step.get("attempts") or [{"ok": step.get("ok"), "reasons": []}]
    first = attempts[0]
    if first.get("skipped") or any(str(r).startswith(("agent_output_invalid", "model_")) for r in first.get("reasons") or []):
        return False
    if len(attempts) == 1 and step.get("ok"):
        return not step.get("repaired")
    return not (len(attempts) == 1 and (step.get("error") or {}).get("code", "").startswith(("agent_output_invalid", "model_")))


async def run_config(
    runner: WorkflowRunner,
    config: EvalConfig,
    cases: list[EvalCase],
    scorers: ScorerSet,
    prices: PriceTable,
    log: ResultsLog,
    *,
    eval_id: str,
    concurrency: int,
    on_done: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run the cases of `config` not finished yet, `concurrency` at a time; every result is
    logged as it finishes. Returns this config's results, reused and new, in case order."""
    done = log.finished()
    results: dict[str, dict[str, Any]] = {}
    pending: list[EvalCase] = []
    for case in cases:
        previous = done.get((config.name, config.fingerprint, case.id))
        if previous is not None and previous.get("case_digest") == case_digest(case) and previous.get("status") != "cancelled":
            results[case.id] = previous
        else:
            pending.append(case)
    gate = asyncio.Semaphore(max(1, concurrency))
    initiator = f"{EVAL_INITIATOR}:{eval_id}:{config.name}"

    async def one(case: EvalCase) -> None:
        async with gate:
            started = time.perf_counter()
            result = await runner.run(config.spec, case.input, initiator=initiator)
            record = outcome(config, case, result, (time.perf_counter() - started) * 1000, scorers, prices)
        log.append(record)
        results[case.id] = record
        if on_done is not None:
            on_done(record)

    tasks = [asyncio.ensure_future(one(case)) for case in pending]
    try:
        await asyncio.gather(*tasks)
    finally:  # Ctrl-C: stop the rest; what finished is already in the log
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return [results[c.id] for c in cases if c.id in results]
