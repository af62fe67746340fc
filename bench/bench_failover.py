"""Endpoint failure isolation: workflows on healthy endpoints while other endpoints are down or
slow, and how fast a call fails over when a replica dies. Prints ratios (goal: p99 <= 1.1x).

    python bench/bench_failover.py [--runs 150] [--latency-ms 20]

Stub OpenAI-compatible servers (tests/support/scripted_openai.py) run in their own processes on
loopback, each answering after a fixed latency, like a model endpoint would. A three-step
workflow runs on the real runner against healthy endpoints (its own alias per step) while
background traffic, at a fixed pace, calls two other aliases:

- quiet: no background traffic at all;
- baseline: both background aliases healthy;
- degraded: one alias refuses connections (nothing listens), the other is 10x slower.

Every alias has its own client, replica pool and breakers, so the healthy workflows should not
notice. Then an alias with two replicas loses one (its process is killed): the first call that
hits the dead replica fails over to the live one at once; after `breaker.failures` such calls the
breaker opens and the dead replica is skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import uvicorn  # noqa: E402

from flotilla.agents.models.openai_compat import OpenAICompatibleClient  # noqa: E402
from flotilla.agents.models.registry import ModelEndpoint, ModelRegistry  # noqa: E402
from flotilla.agents.models.base import ChatRequest  # noqa: E402
from flotilla.audit.runs import RunStore  # noqa: E402
from flotilla.audit.telemetry import JsonLinesSpanExporter, Telemetry  # noqa: E402
from flotilla.graphs import WorkflowRunner, load_workflow  # noqa: E402
from tests.support.scripted_openai import Reply, ScriptedOpenAI  # noqa: E402
from tests.support.servers import free_port  # noqa: E402

STEPS = ("read", "check", "reply")
ANSWER = json.dumps({"subject": "Invoice received", "body": "The invoice was received and its totals match the order."})
WORKFLOW = """
name: isolated
description: Three model steps, each on its own healthy endpoint.
input: {type: text, description: any text}
agents:
""" + "".join(
    f"""  {step}:
    role: Answers with a short note.
    instructions: prompt.md
    output_schema: flotilla.agents.document_triage.schemas:Note
    model: healthy-{step}
    max_tokens: 64
"""
    for step in STEPS
) + "edges:\n" + "".join(f"  - {{from: {a}, to: {b}}}\n" for a, b in zip(STEPS, STEPS[1:]))


def _serve(servers: list[tuple[int, float]]) -> None:
    """A process serving stub endpoints: (port, latency) each, until killed."""

    async def main() -> None:
        tasks = []
        for port, latency in servers:
            app = ScriptedOpenAI(default=lambda body, latency=latency: Reply(ANSWER, delay_s=latency)).app()
            config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off", backlog=512)
            tasks.append(uvicorn.Server(config).serve())
        await asyncio.gather(*tasks)

    asyncio.run(main())


def start(servers: list[tuple[int, float]]) -> multiprocessing.Process:
    process = multiprocessing.get_context("spawn").Process(target=_serve, args=(servers,), daemon=True)
    process.start()
    return process


async def wait_listening(ports: list[int]) -> None:
    for port in ports:
        for _ in range(500):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                await asyncio.sleep(0.02)


def endpoint(*ports: int, **options) -> ModelEndpoint:
    urls = [f"http://127.0.0.1:{p}/v1" for p in ports]
    return ModelEndpoint(provider="openai-compatible", base_url=urls if len(urls) > 1 else urls[0], model="stub", **options)


def registry(endpoints: dict[str, ModelEndpoint]) -> ModelRegistry:
    def http_client(e: ModelEndpoint, key: str | None) -> OpenAICompatibleClient:  # as runtime/wiring.py builds it
        return OpenAICompatibleClient(base_url=e.replicas, model=e.model or "", timeout_s=e.timeout_s, max_retries=e.max_retries,
                                      local=e.local, breaker=e.breaker, health=e.health)

    return ModelRegistry(endpoints, embedded=lambda: sys.exit("no alias may fall back to the embedded model"), http_client=http_client)


REQUEST = ChatRequest(messages=[{"role": "user", "content": "ping"}], json_schema={"type": "object"}, max_tokens=16)


async def background(reg: ModelRegistry, alias: str, stop: asyncio.Event, pace_s: float, outcomes: list[str]) -> None:
    """Calls `alias` at a fixed pace whatever happens, like other workflows sharing the runtime."""
    client = reg.resolve(alias).client
    while not stop.is_set():
        try:
            await client.complete(REQUEST)
            outcomes.append("ok")
        except Exception as exc:  # noqa: BLE001 - the error is the point: count it, keep going
            outcomes.append(type(exc).__name__)
        await asyncio.sleep(pace_s)


async def healthy_runs(runner: WorkflowRunner, spec, runs: int, concurrency: int) -> tuple[list[float], list[str]]:
    samples: list[float] = []
    statuses: list[str] = []
    queue = iter(range(runs))

    async def worker() -> None:
        for _ in queue:
            started = time.perf_counter()
            result = await runner.run(spec, "Invoice INV-1 from Northwind, total 12.00 GBP.")
            samples.append(time.perf_counter() - started)
            statuses.append(result.status)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples, statuses


def p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def isolation(tmp: Path, args: argparse.Namespace, healthy: dict[str, int], spare: list[int], slow_port: int) -> None:
    latency = args.latency_ms / 1000
    spec = load_workflow(tmp / "isolated.yaml")
    dead_port = free_port()  # nothing listens: connection refused
    scenarios = {
        "quiet": {},
        "baseline": {"other-a": endpoint(spare[0]), "other-b": endpoint(spare[1])},
        "degraded": {"other-a": endpoint(dead_port), "other-b": endpoint(slow_port)},
    }
    results: dict[str, dict[str, list]] = {name: {"samples": [], "statuses": [], "background": []} for name in scenarios}
    runners = {}
    others_of = {name: list(others) for name, others in scenarios.items()}
    for name, others in scenarios.items():
        reg = registry({f"healthy-{s}": endpoint(healthy[s]) for s in STEPS} | others)
        telemetry = Telemetry([JsonLinesSpanExporter(tmp / f"traces-{name}.jsonl")])
        runner = WorkflowRunner(registry=reg, telemetry=telemetry, runs=RunStore(f"sqlite:///{tmp / f'runs-{name}.sqlite'}"),
                                checkpoint_path=tmp / f"cp-{name}.sqlite", max_input_bytes=100_000)
        runners[name] = (runner, reg, telemetry)
        await healthy_runs(runner, spec, 10, 1)  # warm-up: connections, compiled graph, checkpointer
    # Alternate the scenarios in small blocks so machine noise lands on all of them alike.
    blocks = max(1, args.runs // 10)
    for _ in range(blocks):
        for name, (runner, reg, _) in runners.items():
            stop = asyncio.Event()
            noise = [asyncio.create_task(background(reg, alias, stop, latency, results[name]["background"])) for alias in others_of[name]]
            samples, statuses = await healthy_runs(runner, spec, args.runs // blocks, args.concurrency)
            stop.set()
            await asyncio.gather(*noise)
            results[name]["samples"] += samples
            results[name]["statuses"] += statuses
    for runner, reg, telemetry in runners.values():
        await runner.aclose()
        telemetry.shutdown()

    base, bad = results["baseline"], results["degraded"]
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    print(f"healthy workflow: {len(STEPS)} model steps at {args.latency_ms:g} ms each, {len(base['samples'])} runs per scenario, "
          f"{args.concurrency} at a time; background: 2 aliases called every {args.latency_ms:g} ms")
    for name, r in results.items():
        counts = {k: r["background"].count(k) for k in sorted(set(r["background"]))}
        status = {k: r["statuses"].count(k) for k in sorted(set(r["statuses"]))}
        print(f"  {name:9s} p50 {p(r['samples'], .5) * 1000:7.1f} ms  p99 {p(r['samples'], .99) * 1000:7.1f} ms  "
              f"runs {status}  background calls {counts}")
    print(f"ratio p99 degraded / baseline (one endpoint refused, one 10x slow): "
          f"{p(bad['samples'], .99) / p(base['samples'], .99):.2f}x (goal <= 1.1x)")
    print(f"ratio p50 degraded / baseline: {p(bad['samples'], .5) / p(base['samples'], .5):.2f}x")
    quiet = results["quiet"]
    print(f"ratio p99 degraded / quiet (no background traffic at all): {p(bad['samples'], .99) / p(quiet['samples'], .99):.2f}x")


async def failover(args: argparse.Namespace, live_port: int) -> None:
    doomed_port = free_port()
    doomed = start([(doomed_port, args.latency_ms / 1000)])
    await wait_listening([doomed_port])
    reg = registry({"replicated": endpoint(doomed_port, live_port)})
    client = reg.resolve("replicated").client
    pool = client.inner.pool
    dead = pool.replicas[0]

    async def timed() -> float:
        started = time.perf_counter()
        await client.complete(REQUEST)
        return time.perf_counter() - started

    warm = [await timed() for _ in range(40)]  # both replicas answer in turn
    doomed.kill()
    doomed.join()
    failed_over, while_open = [], []
    for _ in range(40):
        before = dead.breaker.context.failure_count or 0
        was_open = dead.state == "opened"
        elapsed = await timed()
        if was_open:
            while_open.append(elapsed)
        elif dead.state == "opened" or (dead.breaker.context.failure_count or 0) > before:
            failed_over.append(elapsed)
    await client.aclose()
    normal = statistics.median(warm)
    print(f"failover: 2 replicas at {args.latency_ms:g} ms; one killed; breaker opens after {dead.breaker.context.threshold} failures")
    print(f"  healthy call median {normal * 1000:.1f} ms; calls that hit the dead replica and failed over: {len(failed_over)}, "
          f"median {statistics.median(failed_over) * 1000:.1f} ms (+{(statistics.median(failed_over) - normal) * 1000:.1f} ms to fail over)")
    print(f"  with the breaker open ({len(while_open)} calls): median {statistics.median(while_open) * 1000:.1f} ms")
    print(f"ratio first-failover call / breaker-open call (same live replica): {failed_over[0] / statistics.median(while_open):.2f}x; "
          f"breaker-open call / healthy call: {statistics.median(while_open) / normal:.2f}x")


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="flotilla-bench-failover-"))
    (tmp / "prompt.md").write_text("Write a short note about the text.\n")
    (tmp / "isolated.yaml").write_text(WORKFLOW)
    latency = args.latency_ms / 1000
    healthy = {s: free_port() for s in STEPS}
    spare = [free_port(), free_port()]
    live = free_port()
    slow = free_port()
    processes = [
        start([(port, latency) for port in healthy.values()]),
        start([(port, latency) for port in spare] + [(live, latency)]),
        start([(slow, latency * 10)]),
    ]
    try:
        await wait_listening([*healthy.values(), *spare, live, slow])
        await isolation(tmp, args, healthy, spare, slow)
        await failover(args, live)
    finally:
        for process in processes:
            process.kill()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=150)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    asyncio.run(main(parser.parse_args()))
