"""A finished run's record redacted off the run's path vs inline, A/B in one process run.

    python bench/bench_run_finish.py [--runs 20] [--rounds 3]

The orchestration bench's workflow and stub (bench_orchestration.py), flotilla wired as
`flotilla run` wires it, content policy `redacted`. Interleaved rounds of sequential runs with
the run store's redaction deferred to its background queue (audit/run_redaction.py, the default)
and done inline before the run returns (as before); prints the medians and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_orchestration as orchestration  # noqa: E402


async def main(runs: int, rounds: int) -> None:
    from flotilla.graphs import load_workflow

    proc, stub = orchestration.start_stub()
    tmp = Path(tempfile.mkdtemp(prefix="flotilla-bench-finish-"))
    try:
        orchestration.write_project(tmp, stub)
        runtime = orchestration.flotilla_runtime(tmp)
        spec = load_workflow(tmp / "workflow" / "bench_d0.yaml")
        counter = iter(range(10**9))

        def distinct() -> str:  # no redaction cache hit across runs
            n = next(counter)
            return "\n\n".join(f"{paragraph} [ref {n}]" for paragraph in orchestration.INPUT.split("\n\n"))

        deferred = runtime.runs._finish_deferred
        samples: dict[str, list[float]] = {"deferred": [], "inline": []}
        async with runtime.runner:
            for _ in range(10):  # warm-up: spaCy loads in the redaction worker
                await runtime.runner.run(spec, distinct())
            for _ in range(rounds):
                for mode, side in samples.items():
                    runtime.runs._finish_deferred = deferred if mode == "deferred" else (lambda *args: False)
                    runtime.runs.redaction.drain()  # each mode starts with nothing queued
                    runtime.telemetry.flush()
                    for _ in range(runs):
                        started = time.perf_counter()
                        result = await runtime.runner.run(spec, distinct())
                        side.append(time.perf_counter() - started)
                        if result.status != "succeeded":
                            raise RuntimeError(f"bench run ended {result.status}: {result.error}")
        runtime.close()
    finally:
        proc.terminate()
        proc.wait()
    steps = len(orchestration.STEPS)
    medians = {mode: statistics.median(side) * 1000 for mode, side in samples.items()}
    print(f"four-step workflow, instant stub, content policy redacted; medians of {rounds} interleaved rounds of {runs} runs")
    for mode, ms in medians.items():
        print(f"  record redacted {mode:8}: {ms:7.1f} ms per run, {ms / steps:6.2f} ms per step")
    print(f"  deferred / inline: {medians['deferred'] / medians['inline']:.2f}x the latency")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.rounds))
