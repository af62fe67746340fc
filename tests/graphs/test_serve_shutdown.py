"""`flotilla serve` stopping on purpose (SIGTERM) leaves its runs resumable — `interrupted`, not
`cancelled` — and the next serve to start resumes them; a run an idempotency key claimed for a
process that died before starting it ends `failed` with the reason, so a retry with the key gets
an answer rather than a run pending forever."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from flotilla.audit.runs import RunStore
from flotilla.audit.store import AuditStore
from flotilla.graphs.recovery import process_owner, settle_unstarted
from tests.support.api_flows import GOOD_DECISION
from tests.support.scripted_openai import Reply, ScriptedOpenAI
from tests.support.servers import free_port, serve_app

REPO = Path(__file__).resolve().parents[2]
TOKEN = "api-token-shutdown-tests-0001"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
HOST = socket.gethostname()
TIMEOUT = 180  # a hang guard on a shared machine, not a speed check


def exited_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    return int(proc.stdout)


def start_serve(tmp: Path, port: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "FLOTILLA_CONFIG": str(tmp / "flotilla.yaml"),
        "FLOTILLA_DATA_DIR": str(tmp / "data"),
        "FLOTILLA_CACHE_DIR": str(tmp / "cache"),
        "FLOTILLA_API_TOKEN": TOKEN,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    log = (tmp / f"serve-{time.monotonic_ns()}.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "flotilla.runtime", "serve", "--port", str(port)], env=env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + TIMEOUT
    while True:
        assert proc.poll() is None and time.monotonic() < deadline, Path(log.name).read_text()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)


def settled(url: str, run_id: str, until: set[str]) -> dict:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        view = httpx.get(f"{url}/v1/runs/{run_id}", headers=HEADERS, timeout=10).json()
        if view["status"] in until:
            return view
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not reach {until}: {view}")


def test_sigterm_leaves_runs_interrupted_and_the_next_serve_resumes_them(tmp_path: Path) -> None:
    model = ScriptedOpenAI(default=lambda body: Reply(delay_s=600), model="small")  # the first run waits on its model call
    with serve_app(model.app()) as model_url:
        endpoint = {"provider": "openai-compatible", "base_url": f"{model_url}/v1", "model": "small", "max_retries": 0}
        config = {"models": {"specialist-decide": endpoint}, "workflows": {"decide_quietly": "tests.support.shutdown_flows:decide_quietly"},
                  "max_concurrent_runs": 1, "metrics": False}
        (tmp_path / "flotilla.yaml").write_text(yaml.safe_dump(config))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        serve = start_serve(tmp_path, port)
        try:
            body = {"workflow": "decide_quietly", "input": "Invoice INV-1 from Acme Ltd, total 12.50 GBP."}
            going = httpx.post(f"{url}/v1/runs", json=body, headers={**HEADERS, "Idempotency-Key": "shutdown-1"}).json()["run_id"]
            queued = httpx.post(f"{url}/v1/runs", json=body, headers=HEADERS).json()["run_id"]  # waits for the one slot
            deadline = time.monotonic() + TIMEOUT
            while not model.requests:  # the first run is in the middle of its model call
                assert time.monotonic() < deadline and serve.poll() is None, "the run never reached the model"
                time.sleep(0.05)
            assert settled(url, queued, {"pending"})["status"] == "pending"
            serve.send_signal(signal.SIGTERM)
            assert serve.wait(timeout=TIMEOUT) == -signal.SIGTERM  # uvicorn shuts down, then re-raises the signal
        finally:
            if serve.poll() is None:
                serve.kill()

        runs = RunStore(f"sqlite:///{tmp_path / 'data' / 'runs.sqlite'}")
        for run_id in (going, queued):
            record = runs.get_run(run_id)
            assert record.status == "interrupted" and record.error["code"] == "interrupted", record
            assert record.ended_at is None
        assert runs.run_for_key("shutdown-1") == going

        model.default = lambda body: Reply(json.dumps(GOOD_DECISION))  # the model answers now
        serve = start_serve(tmp_path, port)  # its crash recovery takes both runs over at start-up
        try:
            for run_id in (going, queued):
                view = settled(url, run_id, {"succeeded", "failed", "cancelled", "blocked"})
                assert view["status"] == "succeeded" and view["output"] == {"filed": True, "decision": "approve"}, view
            again = httpx.post(f"{url}/v1/runs", json=body, headers={**HEADERS, "Idempotency-Key": "shutdown-1"})
            assert again.status_code == 202 and again.json()["run_id"] == going  # the key still names that one run
        finally:
            serve.send_signal(signal.SIGTERM)
            serve.wait(timeout=TIMEOUT)

    audit = AuditStore(f"sqlite:///{tmp_path / 'data' / 'audit.sqlite'}")
    events = [r.payload["event"] for r in audit.run_records(going) if r.kind == "run"]
    queued_events = [r.payload["event"] for r in audit.run_records(queued) if r.kind == "run"]
    assert audit.verify().ok
    audit.close()
    assert events == ["started", "interrupted", "recovered", "resumed", "finished"]
    assert queued_events == ["started", "interrupted", "recovered", "resumed", "finished"]


def test_a_claimed_run_whose_process_died_before_starting_it_ends_failed_saying_why(tmp_path: Path) -> None:
    audit = AuditStore(f"sqlite:///{tmp_path / 'audit.sqlite'}")
    runs = RunStore(f"sqlite:///{tmp_path / 'runs.sqlite'}", audit=audit)
    dead = f"{HOST}:{exited_pid()}:1"
    assert runs.claim_run("claimed-by-dead", "wf", "v1", "key-dead", "api:intake", owner=dead) == "claimed-by-dead"
    assert runs.claim_run("claimed-by-me", "wf", "v1", "key-alive", "api:intake", owner=process_owner()) == "claimed-by-me"
    runs.claim_run("claimed-by-temporal", "wf", "v1", "key-temporal", "api:intake")  # no owner: a Temporal worker fills it in

    assert settle_unstarted(runs) == ["claimed-by-dead"]
    assert settle_unstarted(runs) == []  # settled once
    record = runs.get_run("claimed-by-dead")
    assert record.status == "failed" and record.error["code"] == "not_started" and record.ended_at is not None
    assert dead in record.error["message"] and "new idempotency key" in record.error["message"]
    assert runs.get_run("claimed-by-me").status == "pending" and runs.get_run("claimed-by-temporal").status == "pending"
    # A retry with the same key finds that run, which now says what became of it.
    assert runs.claim_run("retry", "wf", "v1", "key-dead", "api:intake", owner=process_owner()) == "claimed-by-dead"
    events = [(r.payload["event"], r.payload.get("status")) for r in audit.run_records("claimed-by-dead")]
    assert events == [("started", "pending"), ("finished", "failed")]
    assert audit.verify().ok
    audit.close()
