"""bench_approval.py --backend temporal: the approval latency of invoice_approval on a real Temporal
dev server and one `flotilla worker`, printed next to the local figures of the same run."""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from _support import RAILS_OFF, REPO, pct, project_env, stub_models_yaml
from chaos_crash import start_stub
from flotilla.audit.runs import RunStore
from flotilla.graphs.backends.base import Decision, Submission
from flotilla.graphs.backends.temporal import TemporalBackend
from flotilla.runtime.settings_temporal import TemporalSettings
from tests.support.temporal import start_worker, stop_worker, temporal_dev_server

GATE = "decide.approval"


def workflow_copy(tmp: Path) -> Path:
    """invoice_approval with its instruction paths made absolute and rails off (as the local runner here)."""
    source = REPO / "graphs" / "samples" / "invoice_approval.yaml"
    spec = yaml.safe_load(source.read_text())
    for agent in spec["agents"].values():
        if "instructions" in agent:
            agent["instructions"] = str((source.parent / agent["instructions"]).resolve())
    spec["rails"] = RAILS_OFF
    path = tmp / "invoice_approval.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


async def gate_recorded(runs: RunStore, run_id: str) -> float:
    """perf_counter when the worker has written the gate's step into the run record."""
    while True:
        record = await asyncio.to_thread(runs.get_run, run_id)
        if record is not None and any(step.get("agent") == GATE for step in record.steps):
            return time.perf_counter()
        await asyncio.sleep(0.005)


async def measure(backend: TemporalBackend, runs: RunStore, workflow: Path, text: str, n: int) -> dict[str, list[float]]:
    figures: dict[str, list[float]] = {"pause": [], "accepted": [], "resumed": [], "finished": []}
    for i in range(n + 1):  # the first run warms the worker up (graph compiled, clients open)
        started = time.perf_counter()
        run_id = await backend.submit(Submission(str(workflow), text, initiator="bench"))
        kinds = [event.kind async for event in backend.events(run_id)]
        paused = time.perf_counter() - started
        assert kinds[-1] == "approval", kinds
        started = time.perf_counter()
        await backend.decide(run_id, Decision("approve", "bench", "ok"))
        accepted = time.perf_counter() - started
        resumed = await gate_recorded(runs, run_id) - started
        result = await backend.wait(run_id)
        finished = time.perf_counter() - started
        assert result["status"] == "succeeded", result
        if i:
            for name, value in (("pause", paused), ("accepted", accepted), ("resumed", resumed), ("finished", finished)):
                figures[name].append(value)
    return figures


async def main(n: int, local: dict[str, list[float]]) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-approval-temporal-"))
    stub, url = start_stub(0.0)
    worker = None
    try:
        with temporal_dev_server(tmp) as address:
            lines = ["audit_content: 'off'", "metrics: false", *stub_models_yaml(url), "temporal:", f"  address: {address}", "  task_queue: bench-approval"]
            (tmp / "flotilla.yaml").write_text("\n".join(lines) + "\n")
            env = project_env(tmp)
            workflow = workflow_copy(tmp)
            worker = start_worker(tmp, env, "--workflow", str(workflow), log=tmp / "worker.log")
            (tmp / "data").mkdir(exist_ok=True)
            runs = RunStore(f"sqlite:///{tmp / 'data' / 'runs.sqlite'}")
            backend = TemporalBackend(TemporalSettings(address=address, task_queue="bench-approval", connect_timeout_s=10), runs)
            text = (REPO / "graphs" / "samples" / "invoice.txt").read_text()
            figures = await measure(backend, runs, workflow, text, n)
            verify = subprocess.run([sys.executable, "-m", "flotilla.runtime", "audit", "verify"], env=env, cwd=tmp, capture_output=True)
    finally:
        if worker is not None:
            stop_worker(worker)
        stub.terminate()
        stub.wait()
    print(f"approval, invoice_approval (stub model, no MCP servers), {n} runs per backend; temporal: dev server + 1 worker, audit verify ok={verify.returncode == 0}")
    print(f"{'':10} {'local p50':>10} {'local p99':>10} {'temporal p50':>13} {'temporal p99':>13}   (ms)")
    for name in ("pause", "accepted", "resumed", "finished"):
        ours = figures[name]
        theirs = local.get(name)
        left = f"{1000 * statistics.median(theirs):10.1f} {1000 * pct(theirs, 0.99):10.1f}" if theirs else f"{'-':>10} {'-':>10}"
        print(f"{name:10} {left} {1000 * statistics.median(ours):13.1f} {1000 * pct(ours, 0.99):13.1f}")
    ratio = statistics.median(figures["resumed"]) / statistics.median(local["resumed"])
    print(f"approve → resumed on temporal: p50 {statistics.median(figures['resumed']):.3f} s ({ratio:.1f}x local), p99 {pct(figures['resumed'], 0.99):.3f} s; goal <= 1 s: {'met' if pct(figures['resumed'], 0.99) <= 1 else 'MISSED'}")
