"""Verification overhead per step, without a model call: the checks every answer goes through.

    python bench/bench_verify.py [--n 2000]

Times `Verifier.verify` (what agents/agent.py runs on each answer, span events included on a
recording span) for the built-in workflow's extract step (degenerate text, grounding over ten
fields, a date expression) on a right answer and on the embedded model's real degenerate
answers, and for a decide-shaped answer with an expression over its reasons. Prints p50/p99
per step and the ratio to the goal of 1 ms (issue 11).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from opentelemetry.sdk.trace import TracerProvider  # noqa: E402

from flotilla.agents.document_triage.schemas import Decision, Invoice  # noqa: E402
from flotilla.graphs import load_workflow  # noqa: E402
from flotilla.graphs.build import resolve_ref  # noqa: E402
from flotilla.graphs.verify_spec import build_verifier  # noqa: E402
from flotilla.agents.output import PydanticOutput  # noqa: E402
from flotilla.graphs.spec import AgentSpec  # noqa: E402
from tests.support.triage import TRIAGE_ANSWERS  # noqa: E402

GOAL_MS = 1.0
INVOICE = (ROOT / "graphs" / "samples" / "invoice.txt").read_text()
REAL = json.loads((ROOT / "tests" / "graphs" / "fixtures" / "smollm2_outputs.json").read_text())["runs"]


def timed(verifier, output, state, tracer, n: int) -> tuple[float, float, float]:
    """p50 and p99 wall time, and p99 CPU time of this thread (the cores are shared: wall-time
    tails include waiting for a core)."""
    wall, cpu = [], []
    for _ in range(n):
        with tracer.start_as_current_span("invoke_agent bench") as span:  # one step, one span
            started, started_cpu = time.perf_counter(), time.thread_time()
            verifier.verify(output, state, span)
            wall.append((time.perf_counter() - started) * 1000)
            cpu.append((time.thread_time() - started_cpu) * 1000)
    wall.sort()
    cpu.sort()
    return statistics.median(wall), wall[int(n * 0.99) - 1], cpu[int(n * 0.99) - 1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    n = parser.parse_args().n
    tracer = TracerProvider().get_tracer("bench")  # a recording span: events cost what they cost in a run
    extract = build_verifier(load_workflow("document_triage").agents["extract"], PydanticOutput(Invoice), resolve_ref)
    decide_spec = AgentSpec(
        role="decides", instructions="x", output_schema="x",
        verify=[{"name": "sentences", "expr": "len(reasons) > 0 and min(words(r) for r in reasons) >= 3", "message": "m"}],
    )
    decide = build_verifier(decide_spec, PydanticOutput(Decision), resolve_ref)
    state = {"input": INVOICE}
    cases = [
        ("extract, right answer", extract, TRIAGE_ANSWERS["Invoice"]),
        ("extract, embedded model's answer", extract, REAL[0]["steps"]["extract"]),
        ("decide, right answer", decide, TRIAGE_ANSWERS["Decision"]),
        ("decide, degenerate (embedded, real)", decide, REAL[0]["steps"]["decide"]),
        ("analyze-shaped, 5 degenerate findings (real)", extract.__class__.defaults({}), REAL[0]["steps"]["analyze"]),
    ]
    print(f"verification per step, {n} runs each, no model call (goal <= {GOAL_MS:g} ms; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    print(f"{'case':<46} {'checks':>6} {'p50 ms':>8} {'p99 ms':>8} {'p99 cpu':>8} {'cpu/goal':>9}")
    for name, verifier, output in cases:
        p50, p99, cpu99 = timed(verifier, output, state, tracer, n)
        print(f"{name:<46} {len(verifier.checks):>6} {p50:>8.3f} {p99:>8.3f} {cpu99:>8.3f} {cpu99 / GOAL_MS:>8.2f}x")


if __name__ == "__main__":
    main()
