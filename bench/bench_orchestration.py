"""Orchestration at the floor: flotilla vs plain LangGraph, side by side in one process run.

    python bench/bench_orchestration.py [--runs 50] [--burst 300] [--spans 1000] [--rounds 3]

The same four-step workflow (extract → analyze → decide → write, each a JSON-schema chat call)
runs against the same stub OpenAI-compatible server (a subprocess, so its CPU is not counted),
answering instantly or after 50 ms. flotilla runs as `flotilla run` wires it (build_runtime):
tracing + audit store + trace file on, content policy `redacted`, every rail engine off in the
workflow's `rails:` section. Plain LangGraph posts with httpx and validates with pydantic, with
the same SQLite checkpointer. Prints each number as a ratio to its goal (issue 10).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import operator
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any, TypedDict

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NEMO_GUARDRAILS_NO_USAGE_STATS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx  # noqa: E402
from _support import invoice  # noqa: E402
from pydantic import BaseModel  # noqa: E402

STEPS = ("extract", "analyze", "decide", "write")
INPUT = (Path(__file__).resolve().parents[1] / "graphs" / "samples" / "invoice.txt").read_text()


def distinct_input(n: int) -> str:
    """Run n's input: the sample invoice with its vendor, people, numbers and IBAN changed
    (`_support.invoice`), every paragraph tagged "[ref n]": no redaction cache, of texts or of
    phone-number candidates, serves one run from another's content."""
    return "\n\n".join(f"{paragraph} [ref {n}]" for paragraph in invoice(n)[0].split("\n\n"))
RAILS_OFF = {name: {"enabled": False} for name in ("presidio", "yara", "injection_classifier", "content_safety", "tool_screen", "llama_guard", "nemo")}


class Extracted(BaseModel):
    vendor: str
    invoice_number: str
    total: float


class Analysed(BaseModel):
    findings: list[str]


class Decided(BaseModel):
    decision: str
    confidence: float


class Written(BaseModel):
    subject: str
    body: str


SCHEMAS: dict[str, type[BaseModel]] = {"extract": Extracted, "analyze": Analysed, "decide": Decided, "write": Written}
ANSWERS = {
    "extract": {"vendor": "Northwind Office Supplies Ltd.", "invoice_number": "INV-2026-0412", "total": 2734.8},
    "analyze": {"findings": ["line items sum to the subtotal"]},
    "decide": {"decision": "approve", "confidence": 0.9},
    "write": {"subject": "Invoice INV-2026-0412 approved", "body": "Your invoice was approved."},
}


# -- the stub model server (run as a subprocess: python bench_orchestration.py --stub PORT) --------

def serve_stub(port: int) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    stats = {"in_flight": 0, "max_in_flight": 0, "requests": 0}
    # The time-average of in_flight since the last read (Little's law: calls/s x seconds a call
    # is held), beside the max, which a burst's first wave sets.
    clock = {"since": time.perf_counter(), "last": time.perf_counter(), "area": 0.0}

    def count(change: int) -> None:
        now = time.perf_counter()
        clock["area"] += stats["in_flight"] * (now - clock["last"])
        clock["last"] = now
        stats["in_flight"] += change

    async def chat(request: Request) -> JSONResponse:
        count(+1)
        stats["requests"] += 1
        stats["max_in_flight"] = max(stats["max_in_flight"], stats["in_flight"])
        try:
            body = await request.json()
            delay_ms = int(request.path_params["delay"])
            if delay_ms:
                await asyncio.sleep(delay_ms / 1000)
            content = json.dumps(ANSWERS.get(body.get("model", ""), {}))  # both sides name the step as the model
            return JSONResponse({
                "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": body.get("model", "stub"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
            })
        finally:
            count(-1)

    async def read_stats(request: Request) -> JSONResponse:
        count(0)
        out = {**stats, "mean_in_flight": clock["area"] / max(clock["last"] - clock["since"], 1e-9)}
        stats["max_in_flight"] = stats["in_flight"]
        clock.update(since=clock["last"], area=0.0)
        return JSONResponse(out)

    app = Starlette(routes=[Route("/d{delay:int}/v1/chat/completions", chat, methods=["POST"]), Route("/stats", read_stats)])
    # A long keep-alive: with uvicorn's 5 s default, a pooled connection idle between phases can be
    # closed by the stub just as a client reuses it (a connection error neither side retries here).
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", backlog=4096, timeout_keep_alive=600)


def start_stub() -> tuple[subprocess.Popen[bytes], str]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, __file__, "--stub", str(port)])
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            httpx.get(f"{url}/stats", timeout=1)
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the stub model server did not start")


def stub_stats(url: str) -> dict[str, int]:
    return httpx.get(f"{url}/stats").json()


# -- plain LangGraph ---------------------------------------------------------------------------

class PlainState(TypedDict, total=False):
    input: str
    outputs: Annotated[list[dict[str, Any]], operator.add]


def plain_graph(client: httpx.AsyncClient, base: str, checkpointer: Any = None) -> Any:
    from langgraph.graph import END, START, StateGraph

    graph = StateGraph(PlainState)

    def node(name: str):
        schema = SCHEMAS[name]
        json_schema = schema.model_json_schema()

        async def run(state: PlainState) -> dict[str, Any]:
            messages = [{"role": "system", "content": f"You are the {name} step."},
                        {"role": "user", "content": state["input"] + "\n" + json.dumps(state.get("outputs", []))}]
            body = {"model": name, "messages": messages, "max_tokens": 256, "temperature": 0.0,
                    "response_format": {"type": "json_schema", "json_schema": {"name": name, "schema": json_schema, "strict": True}}}
            reply = (await client.post(f"{base}/chat/completions", json=body)).json()
            return {"outputs": [schema.model_validate_json(reply["choices"][0]["message"]["content"]).model_dump(mode="json")]}

        return run

    previous = START
    for name in STEPS:
        graph.add_node(name, node(name))
        graph.add_edge(previous, name)
        previous = name
    graph.add_edge(previous, END)
    return graph.compile(checkpointer=checkpointer)


# -- flotilla, wired as `flotilla run` wires it ------------------------------------------------

def write_project(tmp: Path, stub: str) -> None:
    (tmp / "workflow").mkdir()
    models = {}
    for delay in (0, 50):
        agents = {}
        for name in STEPS:
            (tmp / "workflow" / f"{name}.md").write_text(f"You are the {name} step.\n")
            (tmp / "workflow" / f"{name}.schema.json").write_text(json.dumps(SCHEMAS[name].model_json_schema()))
            alias = f"bench-{name}-d{delay}"
            agents[name] = {"role": f"The {name} step.", "instructions": f"{name}.md", "output_schema": f"{name}.schema.json",
                            "model": alias, "max_tokens": 256}
            models[alias] = {"provider": "openai-compatible", "base_url": f"{stub}/d{delay}/v1", "model": name,
                             "max_retries": 0, "timeout_s": 60}
        workflow = {"name": f"bench_d{delay}", "agents": agents, "rails": RAILS_OFF,
                    "edges": [{"from": a, "to": b} for a, b in zip(STEPS, STEPS[1:])]}
        (tmp / "workflow" / f"bench_d{delay}.yaml").write_text(json.dumps(workflow))
    config = {"models": models, "data_dir": str(tmp / "data"), "audit_content": "redacted"}
    (tmp / "flotilla.yaml").write_text(json.dumps(config))


def flotilla_runtime(tmp: Path) -> Any:
    os.environ["FLOTILLA_CONFIG"] = str(tmp / "flotilla.yaml")
    from flotilla.runtime.settings import load_settings
    from flotilla.runtime.wiring import build_runtime

    return build_runtime(load_settings())


# -- measuring ---------------------------------------------------------------------------------

STUB_PID: list[int] = []


def cpu_seconds() -> float:
    """CPU of this process and its children (the redaction worker), not the stub model server's."""
    import psutil

    me = psutil.Process()
    procs = [me, *(c for c in me.children(recursive=True) if c.pid not in STUB_PID)]
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def worker_rss_mb() -> float:
    import psutil

    return sum(c.memory_info().rss for c in psutil.Process().children(recursive=True) if c.pid not in STUB_PID) / 2**20


async def sequential(run_once, runs: int, flush=lambda: None) -> tuple[float, float]:
    """(median seconds per run, CPU seconds per run incl. what `flush` waits for) over `runs` runs in a row."""
    samples = []
    cpu = cpu_seconds()
    for _ in range(runs):
        started = time.perf_counter()
        await run_once()
        samples.append(time.perf_counter() - started)
    flush()
    return statistics.median(samples), (cpu_seconds() - cpu) / runs


async def burst(run_once, total: int, in_flight: int) -> tuple[float, float, float, float]:
    """(runs per second with `in_flight` runs going at once; meanwhile, the cores the event loop's
    thread, this whole process (its threads share one GIL) and the stub used)."""
    import psutil

    gate = asyncio.Semaphore(in_flight)
    stub = psutil.Process(STUB_PID[0])

    async def one() -> None:
        async with gate:
            await run_once()

    started, loop_cpu, own_cpu, stub_cpu = time.perf_counter(), time.thread_time(), time.process_time(), sum(stub.cpu_times()[:2])
    await asyncio.gather(*(one() for _ in range(total)))
    wall = time.perf_counter() - started
    return (total / wall, (time.thread_time() - loop_cpu) / wall, (time.process_time() - own_cpu) / wall,
            (sum(stub.cpu_times()[:2]) - stub_cpu) / wall)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def measure(stub: str, tmp: Path, runs: int, total: int, rounds: int) -> tuple[dict[str, float], dict[str, float]]:
    """Both sides open at once, measured in interleaved rounds (the machine's load hits both alike); medians."""
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    from flotilla.graphs import load_workflow

    counter = iter(range(10**9))
    def distinct() -> str:  # every paragraph of every run's input differs: no redaction cache hit across runs
        return distinct_input(next(counter))
    plain: dict[str, list[float]] = {}
    flot: dict[str, list[float]] = {}
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client, \
            AsyncSqliteSaver.from_conn_string(str(tmp / "plain-cp.sqlite")) as saver:
        graphs = {d: plain_graph(client, f"{stub}/d{d}/v1", saver) for d in (0, 50)}
        plain_rss = rss_mb()
        runtime = flotilla_runtime(tmp)
        specs = {d: load_workflow(tmp / "workflow" / f"bench_d{d}.yaml") for d in (0, 50)}

        def plain_run(delay: int):
            async def run_once() -> None:
                await graphs[delay].ainvoke({"input": distinct(), "outputs": []}, {"configurable": {"thread_id": str(next(counter))}})
            return run_once

        def flotilla_run(delay: int):
            async def run_once() -> None:
                result = await runtime.runner.run(specs[delay], distinct())
                if result.status != "succeeded":
                    raise RuntimeError(f"bench run ended {result.status}: {result.error}")
            return run_once

        async with runtime.runner:
            await sequential(plain_run(0), 10)
            await sequential(flotilla_run(0), 10, runtime.telemetry.flush)  # warm-up: spaCy loads in the exporter
            for _ in range(rounds):
                for side, run_once, flush in ((plain, plain_run(0), lambda: None), (flot, flotilla_run(0), runtime.telemetry.flush)):
                    median, cpu = await sequential(run_once, runs, flush)
                    side.setdefault("median_s", []).append(median)
                    side.setdefault("cpu_s", []).append(cpu)
            for _ in range(max(1, rounds - 1)):
                for side, run_once in ((plain, plain_run(50)), (flot, flotilla_run(50))):
                    stub_stats(stub)
                    runs_per_s, loop_busy, process_busy, stub_busy = await burst(run_once, total, 100)
                    side.setdefault("runs_per_s", []).append(runs_per_s)
                    side.setdefault("loop_busy", []).append(loop_busy)
                    side.setdefault("process_busy", []).append(process_busy)
                    side.setdefault("stub_busy", []).append(stub_busy)
                    stats = stub_stats(stub)
                    side.setdefault("in_flight", []).append(stats["max_in_flight"])
                    side.setdefault("mean_in_flight", []).append(stats["mean_in_flight"])
                    if side is flot:
                        started = time.perf_counter()
                        runtime.telemetry.flush()
                        side.setdefault("export_lag_s", []).append(time.perf_counter() - started)
            ok = runtime.audit_store.verify().ok
            workers_mb = worker_rss_mb()
        runtime.close()
    out_plain = {k: statistics.median(v) for k, v in plain.items()} | {"rss_mb": plain_rss}
    out_flot = {k: statistics.median(v) for k, v in flot.items()} | {"rss_mb": rss_mb(), "verify_ok": float(ok), "worker_mb": workers_mb}
    return out_plain, out_flot


def redaction_throughput(spans: int) -> tuple[float, float]:
    """(spans/s wall, spans per CPU second) through the wired exporter path, on spans recorded from
    real document_triage runs, structural spans included (bench_redaction.py: every invoice distinct)."""
    from bench.bench_redaction import record, throughput

    runs = max(1, spans // 12)  # a document_triage run records 12 spans
    return throughput(asyncio.run(record("document_triage", 5, 10_000)), asyncio.run(record("document_triage", runs, 0)), 512)


async def main(runs: int, total: int, spans: int, rounds: int) -> None:
    proc, stub = start_stub()
    STUB_PID.append(proc.pid)
    tmp = Path(tempfile.mkdtemp(prefix="flotilla-bench-"))
    try:
        write_project(tmp, stub)
        plain, flot = await measure(stub, tmp, runs, total, rounds)
    finally:
        proc.terminate()
        proc.wait()
    redaction_wall, redaction_cpu = await asyncio.to_thread(redaction_throughput, spans)  # it runs event loops of its own

    steps = len(STEPS)
    overhead_ms = (flot["median_s"] - plain["median_s"]) / steps * 1000
    print(f"four-step workflow, stub model in a subprocess; medians of {rounds} interleaved rounds of {runs} sequential runs,"
          f" {total} runs with 100 in flight at 50 ms; every paragraph of every run's input distinct")
    print("flotilla: build_runtime wiring, tracing + audit store + trace file, content policy redacted, rails off")
    print(f"{'':34}{'plain LangGraph':>16}{'flotilla':>12}")
    print(f"{'latency per step, instant stub':34}{plain['median_s'] / steps * 1000:13.2f} ms{flot['median_s'] / steps * 1000:9.2f} ms")
    print(f"{'CPU per run (incl. export)':34}{plain['cpu_s'] * 1000:13.1f} ms{flot['cpu_s'] * 1000:9.1f} ms")
    print(f"{'runs/s, 100 in flight at 50 ms':34}{plain['runs_per_s']:16.1f}{flot['runs_per_s']:12.1f}")
    print(f"{'model calls in flight (max)':34}{plain['in_flight']:16.0f}{flot['in_flight']:12.0f}")
    print(f"{'model calls in flight (mean)':34}{plain['mean_in_flight']:16.1f}{flot['mean_in_flight']:12.1f}")
    print(f"{'cores used in that burst: loop':34}{plain['loop_busy']:16.2f}{flot['loop_busy']:12.2f}")
    print(f"{'  the process (one GIL)':34}{plain['process_busy']:16.2f}{flot['process_busy']:12.2f}  (the stub: "
          f"{plain['stub_busy']:.2f}, {flot['stub_busy']:.2f}; flotilla's redaction worker not counted)")
    print(f"{'peak RSS (process, cumulative)':34}{plain['rss_mb']:13.0f} MB{flot['rss_mb']:9.0f} MB  (flotilla's includes the plain side)")
    print(f"{'redaction worker process RSS':34}{'-':>16}{flot['worker_mb']:9.0f} MB")
    print(f"audit export still queued after the burst: {flot['export_lag_s']:.2f} s to drain; audit verify ok: {bool(flot['verify_ok'])}")
    print("ratios to the goals (<= 1.0 meets a 'at most' goal, >= 1.0 meets an 'at least' one):")
    print(f"  overhead per step over plain LangGraph: {overhead_ms:+.2f} ms (goal <= +1 ms): {overhead_ms / 1.0:.2f}x the budget")
    print(f"  CPU per run vs plain LangGraph: {flot['cpu_s'] / plain['cpu_s']:.2f}x (goal <= 2x)")
    print(f"  runs/s vs plain LangGraph at 100 in flight: {flot['runs_per_s'] / plain['runs_per_s']:.2f}x (goal >= 1x)")
    # The export's work in the runtime's process (store writes of redacted spans) competes with the
    # loop while it keeps up, or is left for after the burst while it lags: count the drain too.
    sustained = total / (total / flot["runs_per_s"] + flot["export_lag_s"])
    print(f"    counting the audit export's drain after the burst: {sustained:.1f} runs/s = {sustained / plain['runs_per_s']:.2f}x")
    print(f"  model calls in flight: {flot['in_flight']:.0f} / 90 = {flot['in_flight'] / 90:.2f}x (goal >= 1x); plain LangGraph's"
          f" {plain['in_flight']:.0f} = {plain['in_flight'] / 90:.2f}x")
    # Little's law: the mean number of calls at the stub is calls/s x 50 ms. 90 held on average
    # takes 90 / 0.05 / steps runs/s, i.e. at most one core / that rate of CPU per run.
    needed = 90 / 0.05 / steps
    print(f"    mean in flight {flot['mean_in_flight']:.1f} (plain {plain['mean_in_flight']:.1f}) = runs/s x {steps} calls x 50 ms;"
          f" 90 on average needs {needed:.0f} runs/s, at most {1000 / needed:.1f} ms of CPU per run on the one event loop"
          f" (plain LangGraph's: {plain['cpu_s'] * 1000:.1f} ms)")
    print(f"  peak RSS: {flot['rss_mb']:.0f} MB / 200 MB = {flot['rss_mb'] / 200:.2f}x (goal <= 1x; the runtime's process, plain side"
          f" included), + {flot['worker_mb']:.0f} MB in the redaction worker (spaCy) = {(flot['rss_mb'] + flot['worker_mb']) / 200:.2f}x")
    print(f"  redaction (spans of real document_triage runs, bench_redaction.py): {redaction_cpu:,.0f} spans per CPU second"
          f" (goal >= 2,000: {redaction_cpu / 2000:.2f}x), {redaction_wall:,.0f} spans/s wall")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--burst", type=int, default=300, help="runs in the 100-in-flight measurement")
    parser.add_argument("--spans", type=int, default=480, help="recorded spans in the redaction measurement (12 per run)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians)")
    parser.add_argument("--stub", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stub:
        serve_stub(args.stub)
    else:
        asyncio.run(main(args.runs, args.burst, args.spans, args.rounds))
