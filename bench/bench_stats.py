"""`flotilla stats` over 100,000 audit records on SQLite: wall time (goal <= 2 s).

    python bench/bench_stats.py [--records 100000] [--db PATH]

Seeds a store with runs shaped like the built-in triage (a workflow span, four agent steps, their
model calls with repairs and escalations, rail decisions) through the real `AuditStore.append`,
then times `specialist_stats` (the SQL aggregation) in-process and `flotilla stats --json` as a
subprocess (interpreter start-up included), and prints each with its ratio to the goal.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flotilla.audit import semconv as sc  # noqa: E402
from flotilla.audit.stats import specialist_stats, trend  # noqa: E402
from flotilla.audit.store import AuditStore, NewRecord  # noqa: E402

GOAL_S = 2.0
AGENTS = (("extract", "specialist-extract"), ("analyze", "specialist-analyze"), ("decide", "specialist-decide"), ("write", "specialist-write"))
MS = 1_000_000


def run_records(rng: random.Random, t: int) -> list[NewRecord]:
    """One run's records, as the exporter writes them (span payloads + one rail record per decision)."""
    run_id, trace_id = uuid.uuid4().hex, uuid.uuid4().hex
    base = {sc.RUN_ID: run_id, sc.WORKFLOW: "document_triage", sc.CONVERSATION_ID: run_id}
    out: list[NewRecord] = []

    def span(name: str, start: int, end: int, attrs: dict, status: str = "UNSET") -> None:
        payload = {"trace_id": trace_id, "span_id": uuid.uuid4().hex[:16], "parent_id": None, "name": name, "kind": "INTERNAL",
                   "start": start, "end": end, "status": status, "attributes": {**base, **attrs}, "events": []}
        out.append(NewRecord("span", payload, run_id))

    cursor = t
    for agent, alias in AGENTS:
        start = cursor
        first_ok = rng.random() > 0.15
        calls = [(alias, first_ok)]
        if not first_ok:
            calls.append((alias, rng.random() > 0.3))  # the repair
        answered = calls[-1][1] and rng.random() > 0.05  # verification passes
        escalated = not answered
        if escalated:
            calls.append(("frontier", True))
        for model_alias, _ok in calls:
            took = rng.randint(50, 900) * MS
            span(f"chat {model_alias}", cursor, cursor + took, {
                sc.OPERATION: "chat", sc.AGENT_NAME: agent, sc.MODEL_ALIAS: model_alias, "gen_ai.request.model": model_alias,
                "gen_ai.usage.input_tokens": rng.randint(200, 900), "gen_ai.usage.output_tokens": rng.randint(20, 200),
                sc.COST_USD: 0.004 if model_alias == "frontier" else 0.0})
            cursor += took
        failed = escalated and rng.random() < 0.2
        attrs = {sc.OPERATION: "invoke_agent", sc.AGENT_NAME: agent, sc.MODEL_ALIAS: alias, "gen_ai.request.model": alias,
                 sc.STEP_FIRST_TRY_VALID: first_ok, sc.STEP_REPAIRS: int(not first_ok), sc.STEP_VERIFIED: 1 + int(escalated),
                 sc.STEP_VERIFIED_PASSED: 0 if failed else 1, sc.STEP_ESCALATED: escalated,
                 sc.STEP_TIER: sc.NEEDS_REVIEW_TIER if failed else ("frontier" if escalated else alias)}
        if failed:
            attrs["error.type"] = "NeedsReview"
        span(f"invoke_agent {agent}", start, cursor, attrs, "ERROR" if failed else "UNSET")
        out.append(NewRecord("rail", {"span": f"invoke_agent {agent}", "engine": "presidio", "verdict": "allow"}, run_id))
        cursor += 2 * MS
    span("invoke_workflow document_triage", t, cursor, {sc.OPERATION: "invoke_workflow", sc.RUN_STATUS: "succeeded"})
    return out


def seed(store: AuditStore, n: int, rng: random.Random) -> int:
    batch: list[NewRecord] = []
    written, t = 0, time.time_ns() - 3 * 86_400 * 10**9
    while written < n:
        batch += run_records(rng, t)
        t += rng.randint(1, 60) * 10**9
        if len(batch) >= 5_000 or written + len(batch) >= n:
            batch = batch[: n - written]
            store.append(batch)
            written += len(batch)
            batch = []
    return written


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--db", type=Path, default=None, help="Reuse (or create) the seeded store here.")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="flotilla-bench-stats-"))
    db = args.db or tmp / "audit.sqlite"
    url = f"sqlite:///{db}"
    store = AuditStore(url)
    if store.count() < args.records:
        started = time.perf_counter()
        seed(store, args.records - store.count(), random.Random(12))
        print(f"seeded {store.count():,} records in {time.perf_counter() - started:.1f}s")

    timings, cpu = [], []
    for _ in range(3):
        started, started_cpu = time.perf_counter(), time.process_time()
        rows = specialist_stats(store)
        timings.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)  # SQLite runs in this process: its CPU time, whatever the machine's load
    best, median = min(timings), statistics.median(timings)
    steps = sum(r.requests for r in rows)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"specialist_stats over {store.count():,} records ({steps:,} agent steps, {len(rows)} rows): "
          f"wall median {median:.3f}s, best {best:.3f}s  (goal <= {GOAL_S:.0f}s: {best / GOAL_S:.2f}x of the limit); "
          f"CPU {statistics.median(cpu):.3f}s ({statistics.median(cpu) / GOAL_S:.2f}x)")
    started = time.perf_counter()
    points = trend(store, "document_triage", by="hour")
    print(f"trend per hour: {time.perf_counter() - started:.3f}s ({len(points)} buckets)")

    env = {**os.environ, "FLOTILLA_AUDIT_URL": url, "FLOTILLA_DATA_DIR": str(tmp / "data")}
    started, children = time.perf_counter(), os.times()
    proc = subprocess.run([sys.executable, "-m", "flotilla.runtime", "stats", "--json", "--since", "all"], capture_output=True, env=env, check=False)
    wall = time.perf_counter() - started
    after = os.times()
    child_cpu = (after.children_user - children.children_user) + (after.children_system - children.children_system)
    status = "ok" if proc.returncode == 0 else f"exit {proc.returncode}: {proc.stderr.decode()[-300:]}"
    print(f"`flotilla stats --json --since all` (start-up included): wall {wall:.3f}s ({wall / GOAL_S:.2f}x of the limit), "
          f"CPU {child_cpu:.3f}s ({child_cpu / GOAL_S:.2f}x) [{status}]")
    store.close()


if __name__ == "__main__":
    main()
