"""Crash recovery of local runs: who owns a run, when it is an orphan, taking it over exactly once,
the heartbeat, and the real thing — a `flotilla run` process killed with SIGKILL mid-run, resumed
by the next process to `succeeded` with the audit chain intact — plus a short crash trial."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from flotilla.audit.runs import RunStore
from flotilla.audit.store import AuditStore
from flotilla.graphs import load_workflow
from flotilla.graphs.recovery import Heartbeat, find_orphans, owner_is_alive, process_owner, workflow_resolver
from flotilla.runtime.cli_recover import orphan_notice, serve_recovery
from flotilla.runtime.settings import Settings
from tests.support.scripted_openai import Reply, ScriptedOpenAI, by_schema, schema_name
from tests.support.servers import serve_app
from tests.support.triage import FOUR_AGENT_TRIAGE, TRIAGE_ANSWERS

from .conftest import ALIASES, down_for

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "graphs" / "samples" / "invoice.txt"
HOST = socket.gethostname()


def exited_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    return int(proc.stdout)


# -- owners and orphans --------------------------------------------------------------------------

def test_an_owner_on_this_host_is_alive_exactly_while_its_process_is() -> None:
    now = datetime.now(UTC)
    assert owner_is_alive(process_owner(), None, now=now)  # this process, whatever its heartbeat
    assert not owner_is_alive(f"{HOST}:{exited_pid()}:123", now, now=now)  # pid gone: dead, even with a fresh heartbeat
    started = process_owner().rsplit(":", 2)[2]
    assert not owner_is_alive(f"{HOST}:{os.getpid()}:{started}0", now, now=now)  # the pid now names a later process


def test_an_owner_on_another_host_is_judged_by_its_heartbeat() -> None:
    now = datetime.now(UTC)
    assert owner_is_alive("elsewhere:1:1", now - timedelta(seconds=10), now=now, lease_s=60)
    assert not owner_is_alive("elsewhere:1:1", now - timedelta(seconds=61), now=now, lease_s=60)
    assert not owner_is_alive("elsewhere:1:1", None, now=now)
    assert owner_is_alive(None, now - timedelta(seconds=5), now=now)  # ownerless (older runs): by age
    assert owner_is_alive("temporal:flotilla-runs", None, now=now)  # Temporal recovers its own runs
    assert not owner_is_alive(None, now - timedelta(minutes=5), now=now)


def test_only_running_runs_of_dead_owners_are_orphans(tmp_path: Path) -> None:
    runs = RunStore(f"sqlite:///{tmp_path / 'runs.sqlite'}")
    dead = f"{HOST}:{exited_pid()}:1"
    runs.start_run("orphan", "wf", "v1", "x", None, owner=dead)
    runs.start_run("alive", "wf", "v1", "x", None, owner=process_owner())
    runs.start_run("finished", "wf", "v1", "x", None, owner=dead)
    runs.finish_run("finished", "succeeded", [])
    runs.start_run("failed", "wf", "v1", "x", None, owner=dead)
    runs.finish_run("failed", "failed", [], error={"message": "boom"})  # resumed by a person, not by recovery
    assert [o.run_id for o in find_orphans(runs)] == ["orphan"]
    assert orphan_notice(runs) == "1 run(s) of a process that died are still marked running; `flotilla runs recover` resumes them"


def test_of_many_processes_taking_an_orphan_over_exactly_one_wins(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.sqlite'}"
    dead = f"{HOST}:{exited_pid()}:1"
    RunStore(url).start_run("orphan", "wf", "v1", "x", None, owner=dead)
    stores = [RunStore(url) for _ in range(8)]  # one engine each, as separate processes would have
    barrier, wins = threading.Barrier(len(stores)), []

    def contender(i: int) -> None:
        barrier.wait()
        wins.append(stores[i].take_over("orphan", dead, f"{HOST}:{1000 + i}:1"))

    threads = [threading.Thread(target=contender, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == [False] * 7 + [True]
    assert stores[0].running_runs()[0][3] != dead  # the winner owns it now


async def test_the_heartbeat_refreshes_the_runs_of_its_process_only(tmp_path: Path) -> None:
    runs = RunStore(f"sqlite:///{tmp_path / 'runs.sqlite'}")
    runs.start_run("mine", "wf", "v1", "x", None, owner="me:1:1")
    runs.start_run("theirs", "wf", "v1", "x", None, owner="them:1:1")
    before = {r[0]: r[4] for r in runs.running_runs()}
    beat = Heartbeat(runs, "me:1:1", interval_s=0.05)
    beat.ensure_started()
    while {r[0]: r[4] for r in runs.running_runs()}["mine"] == before["mine"]:
        await asyncio_sleep(0.02)
    await beat.stop()
    after = {r[0]: r[4] for r in runs.running_runs()}
    assert after["mine"] > before["mine"] and after["theirs"] == before["theirs"]


async def asyncio_sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


# -- what `flotilla serve` does at start-up --------------------------------------------------------

async def test_serve_recovery_resumes_an_orphan_of_a_workflow_file_beside_the_config(harness, tmp_path: Path) -> None:
    model, down = down_for("Decision")
    h = harness(model)
    workflow = tmp_path / "document_triage.yaml"  # a workflow run from a file, found again by its name
    workflow.write_text(FOUR_AGENT_TRIAGE.read_text().replace("../../agents/", f"{ROOT}/agents/"))
    (tmp_path / "flotilla.yaml").write_text("{}\n")
    crashed = await h.runner.run(load_workflow(workflow), SAMPLE.read_text())
    h.runs.mark_running(crashed.run_id, owner=f"{HOST}:{exited_pid()}:1")  # as if its process had died mid-run
    down["yes"] = False
    settings = Settings(data_dir=tmp_path / "data", config_file=tmp_path / "flotilla.yaml")
    async with serve_recovery(settings, h.runner) as loop:
        while not loop.recovered:
            await asyncio_sleep(0.05)
    assert [(r.run_id, r.status) for r in loop.recovered] == [(crashed.run_id, "succeeded")]
    assert h.runs.get_run(crashed.run_id).status == "succeeded"


async def test_an_orphan_that_cannot_resume_ends_failed_saying_why_not_running(harness, tmp_path: Path) -> None:
    from flotilla.graphs.recovery import recover_orphans

    h = harness()
    h.runs.start_run("lost", "a_workflow_since_deleted", "v1", "x", None, owner=f"{HOST}:{exited_pid()}:1")
    [recovered] = await recover_orphans(h.runner, workflow_resolver({}, [tmp_path]))
    assert recovered.status == "failed" and "no workflow named 'a_workflow_since_deleted'" in recovered.error
    record = h.runs.get_run("lost")
    assert record.status == "failed" and record.error["message"].startswith("cannot recover: ")
    assert find_orphans(h.runs) == []  # no process will retry it on its own; `flotilla run --resume` can


def test_a_workflow_that_cannot_be_found_again_is_a_clear_error(tmp_path: Path) -> None:
    from flotilla.audit.errors import ConfigError

    with pytest.raises(ConfigError, match=r"found again as gone\.yaml beside flotilla\.yaml"):
        workflow_resolver({}, [tmp_path])("gone", None)


# -- the real thing: kill -9 a worker mid-run --------------------------------------------------------

def flotilla(tmp: Path, *args: str, **popen) -> list[str] | subprocess.Popen:
    env = {**os.environ, "FLOTILLA_CONFIG": str(tmp / "flotilla.yaml"), "FLOTILLA_DATA_DIR": str(tmp / "data"), "FLOTILLA_CACHE_DIR": str(tmp / "cache")}
    return subprocess.Popen([sys.executable, "-m", "flotilla.runtime", *args], env=env, cwd=tmp, start_new_session=True, **popen)


RAIL_ENGINES = ("presidio", "yara", "injection_classifier", "content_safety", "tool_screen", "llama_guard", "nemo")


def rails_off_triage(folder: Path) -> Path:
    """The built-in document_triage as a file of another name, its rail engines off (start-up time)."""
    import yaml

    spec = yaml.safe_load((ROOT / "graphs" / "document_triage.yaml").read_text())
    spec["name"] = "triage_rails_off"
    for agent in spec["agents"].values():
        if "instructions" in agent:
            agent["instructions"] = str((ROOT / "graphs" / agent["instructions"]).resolve())
    spec["rails"] = {engine: {"enabled": False} for engine in RAIL_ENGINES}
    path = folder / "triage_rails_off.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_a_run_killed_mid_run_is_resumed_by_the_next_process_and_the_chain_verifies(tmp_path: Path) -> None:
    workflow_file = rails_off_triage(tmp_path)  # beside flotilla.yaml: found again by its name
    server = ScriptedOpenAI(default=lambda body: Reply(delay_s=600))  # the worker waits on its model call…
    lines = ["models:"]
    with serve_app(server.app()) as url:
        for alias in ALIASES:
            lines += [f"  {alias}:", "    provider: openai-compatible", f"    base_url: {url}/v1", f"    model: {alias}", "    max_retries: 0"]
        (tmp_path / "flotilla.yaml").write_text("\n".join(lines) + "\nmetrics: false\n")
        worker = flotilla(tmp_path, "run", str(workflow_file), "--input", str(SAMPLE), "--json", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        while not server.requests:  # …so when the request has arrived, the run is surely mid-run
            assert worker.poll() is None, worker.communicate()
            time.sleep(0.05)
        os.killpg(worker.pid, signal.SIGKILL)  # the worker and its children (the ledger server)
        worker.wait()

        runs = RunStore(f"sqlite:///{tmp_path / 'data' / 'runs.sqlite'}")
        [(run_id, workflow, _, owner, _, _)] = runs.running_runs()
        assert workflow == "triage_rails_off" and owner.split(":")[1] == str(worker.pid)
        assert [o.run_id for o in find_orphans(runs)] == [run_id]

        server.default = by_schema(TRIAGE_ANSWERS)  # the model answers now
        recover = flotilla(tmp_path, "runs", "recover", "--json", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = recover.communicate(timeout=300)
        assert recover.returncode == 0, err.decode()
        [recovered] = json.loads(out)["recovered"]
        assert (recovered["run_id"], recovered["status"], recovered["previous_owner"]) == (run_id, "succeeded", owner)

    record = runs.get_run(run_id)
    assert record.status == "succeeded" and record.output["subject"] == "Invoice INV-2026-0412: approved"
    assert [s["agent"] for s in record.steps] == ["extract", "vendor", "purchase_order", "prior_invoices", "analyze", "decide", "write"]
    assert [schema_name(b) for b in server.requests] == ["Invoice", "Invoice"]  # the step in flight ran again, once
    audit = AuditStore(f"sqlite:///{tmp_path / 'data' / 'audit.sqlite'}")
    events = [r.payload["event"] for r in audit.run_records(run_id) if r.kind == "run"]
    audit.close()
    assert events == ["started", "recovered", "resumed", "finished"]
    again = flotilla(tmp_path, "runs", "recover", "--json", stdout=subprocess.PIPE)
    assert json.loads(again.communicate(timeout=300)[0]) == {"recovered": []}  # nothing is resumed twice
    verify = flotilla(tmp_path, "audit", "verify", stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = verify.communicate(timeout=120)[0].decode()
    assert verify.returncode == 0, output


@pytest.mark.parametrize(("backend", "trials"), [("local", 10), ("temporal", 3)])
def test_a_short_crash_trial_finishes_every_run_without_duplicates(tmp_path: Path, backend: str, trials: int) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "chaos_crash.py"), "--backend", backend, "--trials", str(trials), "--json",
         "--model-delay", "0.2", "--keep", str(tmp_path / "chaos")],
        capture_output=True, text=True, timeout=1800,
    )
    figures = json.loads(proc.stdout.splitlines()[-1])
    assert proc.returncode == 0 and figures["ok"], (figures, proc.stderr[-3000:])
    assert figures["finished"] == trials and figures["ledger_writes"] == trials and figures["ledger_duplicated_writes"] == 0
    assert figures["audit_lost_records"] == 0 and figures["audit_duplicated_records"] == 0 and figures["audit_verify_ok"]
    assert figures["audit_lost_step_spans"] == 0  # the span write-ahead log: a killed worker's finished steps stay traced
    assert figures["recovered_by_next_process"] == figures["killed_mid_run"]
