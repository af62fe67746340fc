"""A run's own records on its path: what a run waits for in start_run + finish_run, A/B in one process.

    python bench/bench_run_records.py [--runs 60] [--steps-ms 40]

Both sides write the same rows (runs.sqlite) and `run` records (audit.sqlite, hash chain), each
commit an fsync (WAL, synchronous=FULL), on this machine's disk:
  sequential  the row, then its record: start and finish each wait for two commits in a row
              (how RunStore wrote them before)
  start       the start waits for its row only (its record follows in the background, recoverable
              from the row); the finish as before (row, then record)
  both        the finish too waits for its row only (what the runner does now): both records follow
              in the background, each repairable from the row
Between start and finish the run's steps take `--steps-ms` (a sleep, not counted): the time a
background record has to land. Prints the median ms a run waits on its records, and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flotilla.audit.runs import RunStore  # noqa: E402
from flotilla.audit.store import AuditStore  # noqa: E402


def sequential(runs: RunStore, run_id: str, steps_s: float) -> float:
    started = time.perf_counter()
    runs.start_run(run_id, "wf", "v1", "invoice text " * 50, "bench")  # row, then record
    waited = time.perf_counter() - started
    time.sleep(steps_s)
    started = time.perf_counter()
    audit, runs.audit = runs.audit, None
    try:
        runs.finish_run(run_id, "succeeded", [{"agent": "extract"}], output={"ok": True})  # the row alone
    finally:
        runs.audit = audit
    runs._audit(run_id, event="finished", status="succeeded", steps=1, error=None)  # then its record
    return waited + time.perf_counter() - started


def start_deferred(runs: RunStore, run_id: str, steps_s: float, *, finish_deferred: bool = False) -> float:
    started = time.perf_counter()
    runs.start_run(run_id, "wf", "v1", "invoice text " * 50, "bench", defer_audit=True)
    waited = time.perf_counter() - started
    time.sleep(steps_s)
    started = time.perf_counter()
    runs.finish_run(run_id, "succeeded", [{"agent": "extract"}], output={"ok": True}, defer_audit=finish_deferred)
    return waited + time.perf_counter() - started


def both_deferred(runs: RunStore, run_id: str, steps_s: float) -> float:
    return start_deferred(runs, run_id, steps_s, finish_deferred=True)


def main(n: int, steps_ms: float) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="flotilla-bench-records-"))
    runs = RunStore(f"sqlite:///{tmp / 'runs.sqlite'}", audit=AuditStore(f"sqlite:///{tmp / 'audit.sqlite'}"))
    variants = {"sequential": sequential, "start": start_deferred, "both": both_deferred}
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(n):  # interleaved: the machine's load hits all alike
        for name, one in variants.items():
            samples[name].append(one(runs, f"{name}-{i}", steps_ms / 1000))
    runs.audit_writer.drain()
    assert runs.audit.verify().ok
    seq, start, both = (statistics.median(samples[k]) * 1000 for k in variants)
    print(f"a run's wait in start_run + finish_run, {steps_ms:g} ms of steps between; {n} runs each, interleaved; audit verify ok")
    print(f"  sequential (row, then record):                  {seq:6.2f} ms")
    print(f"  the start's record in the background:           {start:6.2f} ms   ({start / seq:.2f}x: {seq - start:.2f} ms less a run)")
    print(f"  both records in the background (the runner's):  {both:6.2f} ms   ({both / seq:.2f}x: {seq - both:.2f} ms less a run)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--steps-ms", type=float, default=40.0)
    args = parser.parse_args()
    main(args.runs, args.steps_ms)
