"""Live metrics overhead per agent step: metrics on vs off, measured in the same run (goal <= 0.1 ms).

    python bench/bench_metrics.py [--steps 2000] [--rounds 15]

A step is traced the way the runner traces one (an invoke_agent span with its `flotilla.step.*`
outcome, a chat span with usage, cost and a schema evaluation event) through a real Telemetry:
once without metrics, once with `FlotillaMetrics` (the span processor feeding the instruments,
Prometheus reader attached). Rounds alternate off/on so both see the same machine load; the
best round of each is compared. The step itself only queues its spans; the instruments are
updated when a reader collects, so a scrape follows each round and its extra time per step is
printed too: that work is real, only not on the step's path.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flotilla.audit import semconv as sc  # noqa: E402
from flotilla.audit.metrics import FlotillaMetrics  # noqa: E402
from flotilla.audit.telemetry import Telemetry  # noqa: E402

GOAL_MS = 0.1
AGENTS = ("extract", "analyze", "decide", "write")


def steps(telemetry: Telemetry, n: int) -> float:
    """Seconds for `n` traced steps."""
    tracer = telemetry.tracer
    started = time.perf_counter()
    for i in range(n):
        agent = AGENTS[i % 4]
        alias = f"specialist-{agent}"
        with tracer.start_as_current_span(f"invoke_agent {agent}", attributes={
            sc.OPERATION: "invoke_agent", sc.AGENT_NAME: agent, sc.WORKFLOW: "document_triage", sc.MODEL_ALIAS: alias,
            "gen_ai.request.model": "smollm2-135m", sc.PROVIDER: sc.EMBEDDED_PROVIDER,
        }) as step:
            with tracer.start_as_current_span("chat smollm2-135m", attributes={
                sc.OPERATION: "chat", sc.AGENT_NAME: agent, sc.MODEL_ALIAS: alias, "gen_ai.request.model": "smollm2-135m",
                sc.PROVIDER: sc.EMBEDDED_PROVIDER,
            }) as chat:
                chat.set_attributes({"gen_ai.response.model": "smollm2-135m", "gen_ai.usage.input_tokens": 420,
                                     "gen_ai.usage.output_tokens": 60, sc.COST_USD: 0.0, sc.MODEL_LOCAL: True})
                sc.evaluation_event(chat, "output_schema", passed=True)
            step.set_attributes({sc.STEP_FIRST_TRY_VALID: True, sc.STEP_REPAIRS: 0, sc.STEP_VERIFIED: 1, sc.STEP_VERIFIED_PASSED: 1,
                                 sc.STEP_TIER: alias, sc.STEP_ESCALATED: i % 10 == 0})
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=2_000, help="Steps between two scrapes (2 spans each).")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    off, metrics = Telemetry(()), FlotillaMetrics(otlp=False)
    on = Telemetry((), metrics=metrics)
    steps(off, 500), steps(on, 500), metrics.prometheus_text()  # warm both
    best = {"off": float("inf"), "on": float("inf"), "scrape": float("inf")}
    for _ in range(args.rounds):
        best["off"] = min(best["off"], steps(off, args.steps))
        best["on"] = min(best["on"], steps(on, args.steps))
        started = time.perf_counter()
        text = metrics.prometheus_text()  # a scrape, as Prometheus makes every 15 s: records what the round's spans carry
        best["scrape"] = min(best["scrape"], time.perf_counter() - started)
    per_off, per_on = (best[k] / args.steps * 1000 for k in ("off", "on"))
    overhead = per_on - per_off
    started = time.perf_counter()
    empty = metrics.prometheus_text()
    idle_scrape = time.perf_counter() - started
    deferred = (best["scrape"] - idle_scrape) / args.steps * 1000
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; {args.steps:,} steps x {args.rounds} rounds, best round each")
    print(f"traced step, metrics off: {per_off:.4f} ms")
    print(f"traced step, metrics on:  {per_on:.4f} ms  ({per_on / per_off:.2f}x of off)")
    print(f"metrics overhead per step (on the step's path): {overhead:.4f} ms  (goal <= {GOAL_MS} ms: {overhead / GOAL_MS:.2f}x of the limit)")
    print(f"recording per step, deferred to the next collection: {deferred:.4f} ms "
          f"(a scrape after {args.steps:,} steps {best['scrape'] * 1000:.1f} ms, an idle scrape {idle_scrape * 1000:.1f} ms, {len(empty):,} bytes)")
    off.shutdown(), on.shutdown()


if __name__ == "__main__":
    main()
