"""Runs submitted over the HTTP run API (`POST /v1/runs`) to `flotilla serve` on the local backend.

    python bench/bench_http_runs.py [--runs 1000] [--clients 50]

The four-step workflow of bench_orchestration.py (extract → analyze → decide → write, each a
JSON-schema chat call to a stub OpenAI-compatible server answering after 50 ms, rails off) is
submitted `--runs` times by `--clients` concurrent HTTP clients to one `flotilla serve` process
(uvicorn, the real app: bearer auth, run store, checkpointer, audit chain), which runs
`--in-flight` of them at once (`max_concurrent_runs`; the rest wait as `pending`). Every run is then
awaited by polling `GET /v1/runs/{id}`. Prints runs/s (first submit → last run ended), submit
latency (p50/p99 of the 202), and submit → finished latency (p50/p99, from the run's `ended_at`),
with the errors (non-202 answers, runs not `succeeded`: both must be 0; model calls get two
retries, as in production, against the single stub process). The same runs through
the runner in process (no HTTP), measured in this run, are the peer: the ratio is what the API
and its backend add.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench_orchestration import INPUT, start_stub, write_project  # noqa: E402

WORKFLOW = "bench_d50"
TOKEN = "bench-api-token-not-a-secret"


def serve(port: int, tmp: Path) -> None:
    """The server process: the real `flotilla serve` app, with the bench workflow file by name."""
    import uvicorn

    os.environ["FLOTILLA_CONFIG"] = str(tmp / "flotilla.yaml")
    os.environ["FLOTILLA_API_TOKEN"] = TOKEN
    os.environ["FLOTILLA_MAX_CONCURRENT_RUNS"] = os.environ.get("BENCH_IN_FLIGHT", "32")
    from flotilla.graphs import load_workflow
    from flotilla.runtime.serve import create_app
    from flotilla.runtime.settings import load_settings

    app = create_app(load_settings())
    backend = app.state.runtime.backend
    named, spec = backend.workflows, load_workflow(tmp / "workflow" / f"{WORKFLOW}.yaml")
    backend.workflows = lambda name: spec if name == WORKFLOW else named(name)  # a YAML file is not a registered name
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def start_server(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port), str(tmp)])
    url = f"http://127.0.0.1:{port}"
    for _ in range(1200):
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("flotilla serve did not start")


def with_retries(config: Path) -> None:
    """Two retries per model call, as a production config has: a thousand runs against one stub
    process see the odd refused connection, which is the stub's limit, not flotilla's."""
    settings = json.loads(config.read_text())
    for endpoint in settings["models"].values():
        endpoint["max_retries"] = 2
    config.write_text(json.dumps(settings))


def pct(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1] if len(values) > 1 else values[0]


async def over_http(url: str, runs: int, clients: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    submitted: dict[str, float] = {}
    submit_s: list[float] = []
    errors: list[str] = []
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=120) as http:
        await http.post("/v1/runs", json={"workflow": WORKFLOW, "input": INPUT})  # warm-up: compile, connect
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(runs):
            queue.put_nowait(i)

        async def client() -> None:
            while not queue.empty():
                queue.get_nowait()
                began = time.time()
                answer = await http.post("/v1/runs", json={"workflow": WORKFLOW, "input": INPUT})
                submit_s.append(time.time() - began)
                if answer.status_code != 202:
                    errors.append(f"submit answered {answer.status_code}: {answer.text[:200]}")
                    continue
                submitted[answer.json()["run_id"]] = began

        first = time.time()
        await asyncio.gather(*(client() for _ in range(clients)))
        ended: dict[str, float] = {}
        waiting = list(submitted)
        # Runs end roughly in the order they were submitted: only the oldest few are polled (their
        # `ended_at` is the server's, so polling late costs no accuracy, and the server little).
        while waiting:
            await asyncio.sleep(0.25)

            async def look(run_id: str) -> None:
                view = (await http.get(f"/v1/runs/{run_id}")).json()
                if view["ended_at"] is not None:
                    ended[run_id] = datetime.fromisoformat(view["ended_at"]).timestamp()
                    if view["status"] != "succeeded":
                        errors.append(f"run {run_id} ended {view['status']}: {view['error']}")

            await asyncio.gather(*(look(r) for r in waiting[:8]))
            waiting = [r for r in waiting if r not in ended]
    latency = [ended[r] - submitted[r] for r in submitted]
    return {  # type: ignore[return-value]
        "runs_per_s": len(ended) / (max(ended.values()) - first),
        "submit_p50_ms": pct(submit_s, 50) * 1000,
        "submit_p99_ms": pct(submit_s, 99) * 1000,
        "p50_s": pct(latency, 50),
        "p99_s": pct(latency, 99),
        "errors": errors,
    }


async def in_process(tmp: Path, runs: int, clients: int) -> float:
    """The peer: the same runs on the runner directly, `clients` at a time."""
    os.environ["FLOTILLA_CONFIG"] = str(tmp / "flotilla.yaml")
    os.environ["FLOTILLA_DATA_DIR"] = str(tmp / "data-peer")
    from flotilla.graphs import load_workflow
    from flotilla.runtime.settings import load_settings
    from flotilla.runtime.wiring import build_runtime

    runtime = build_runtime(load_settings())
    spec = load_workflow(tmp / "workflow" / f"{WORKFLOW}.yaml")
    gate = asyncio.Semaphore(clients)

    async def one() -> None:
        async with gate:
            result = await runtime.runner.run(spec, INPUT, initiator="bench")
            assert result.status == "succeeded", result.error

    try:
        await one()  # warm-up
        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(runs)))
        return runs / (time.perf_counter() - started)
    finally:
        await runtime.runner.aclose()
        runtime.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=50, help="concurrent HTTP clients submitting")
    parser.add_argument("--in-flight", type=int, default=32, help="runs going at once: the server's max_concurrent_runs, and the peer's")
    parser.add_argument("--serve", nargs=2, metavar=("PORT", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(int(args.serve[0]), Path(args.serve[1]))
        return
    stub, stub_url = start_stub()
    server = None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            write_project(Path(tmp), stub_url)
            with_retries(Path(tmp) / "flotilla.yaml")
            os.environ["BENCH_IN_FLIGHT"] = str(args.in_flight)
            server, url = start_server(Path(tmp))
            http = asyncio.run(over_http(url, args.runs, args.clients))
            server.terminate()
            server.wait(timeout=60)
            peer = asyncio.run(in_process(Path(tmp), args.runs, args.in_flight))
    finally:
        for proc in (server, stub):
            if proc is not None and proc.poll() is None:
                proc.kill()
    print(f"HTTP run API, local backend, 1 serve process: {args.runs} runs of a 4-step workflow (stub model at 50 ms),")
    print(f"{args.clients} clients submitting, {args.in_flight} runs at once (max_concurrent_runs; the peer: the runner in process, as many at once)")
    print(f"  runs/s                     {http['runs_per_s']:8.1f}   (peer: {peer:.1f}; ratio {http['runs_per_s'] / peer:.2f})")
    print(f"  submit (202) p50 / p99     {http['submit_p50_ms']:8.1f} / {http['submit_p99_ms']:.1f} ms")
    print(f"  submit → ended p50 / p99   {http['p50_s']:8.2f} / {http['p99_s']:.2f} s")
    print(f"  errors                     {len(http['errors']):8d}")
    for error in http["errors"][:5]:
        print(f"    {error}")


if __name__ == "__main__":
    main()
