"""A process killed between committing a run's row and appending its `run` record to the audit
chain: recovery appends the missing `started` / `finished` record late, marked repaired — once,
however many rounds or processes repair, and the chain still verifies."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from flotilla.audit.runs import RunStore
from flotilla.audit.store import AuditStore
from flotilla.graphs.record_repair import repair_run_records
from flotilla.graphs.recovery import process_owner, recover_orphans, workflow_resolver

HOST = __import__("socket").gethostname()


def dead_owner() -> str:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    return f"{HOST}:{int(proc.stdout)}:1"


def stores(tmp: Path) -> RunStore:
    """A run store writing its run records to an audit chain, as the runtime wires them (a new
    pair per call: as a separate process would open them)."""
    return RunStore(f"sqlite:///{tmp / 'runs.sqlite'}", audit=AuditStore(f"sqlite:///{tmp / 'audit.sqlite'}"))


def unaudited(runs: RunStore, write, *args, **kwargs) -> None:
    """The row committed, the process killed before its audit record: the row write alone."""
    audit, runs.audit = runs.audit, None
    try:
        write(*args, **kwargs)
    finally:
        runs.audit = audit


def run_events(runs: RunStore, run_id: str) -> list[dict]:
    return [r.payload for r in runs.audit.run_records(run_id) if r.kind == "run"]


def test_a_finish_lost_to_a_kill_is_appended_once_marked_repaired_and_the_chain_verifies(tmp_path: Path) -> None:
    runs = stores(tmp_path)
    owner = dead_owner()
    runs.start_run("r1", "wf", "v1", "x", None, owner=owner)
    unaudited(runs, runs.finish_run, "r1", "failed", [{"agent": "a"}, {"agent": "b"}], error={"message": "boom"})
    runs.start_run("ok", "wf", "v1", "x", None, owner=owner)
    runs.finish_run("ok", "succeeded", [])  # both records there: nothing to repair

    repaired = repair_run_records(runs)
    assert [(r.run_id, r.event, r.status) for r in repaired] == [("r1", "finished", "failed")]
    finished = [e for e in run_events(runs, "r1") if e["event"] == "finished"]
    assert len(finished) == 1
    assert finished[0]["repaired"] is True and finished[0]["status"] == "failed" and finished[0]["steps"] == 2
    assert finished[0]["error"] == {"message": "boom"} and finished[0]["ended_at"].endswith("Z")
    assert runs.audit.run_summary("r1")["status"] == "failed"
    assert runs.audit.verify().ok

    count = runs.audit.count()
    assert repair_run_records(runs) == []  # the next round of this process
    assert repair_run_records(stores(tmp_path)) == []  # a new process (its first, day-long window)
    assert runs.audit.count() == count and runs.audit.verify().ok
    assert [e["event"] for e in run_events(runs, "ok")] == ["started", "finished"]


def test_a_start_lost_to_a_kill_is_appended_and_a_later_finish_is_not_doubled(tmp_path: Path) -> None:
    runs = stores(tmp_path)
    unaudited(runs, runs.start_run, "r2", "wf", "v1", "x", "alice", owner=dead_owner())
    [repaired] = repair_run_records(runs)
    assert (repaired.event, repaired.status) == ("started", "running")
    [started] = run_events(runs, "r2")
    assert started["repaired"] is True and started["workflow"] == "wf" and started["initiator"] == "alice"
    runs.finish_run("r2", "succeeded", [])
    assert repair_run_records(stores(tmp_path)) == []
    assert [e["event"] for e in run_events(runs, "r2")] == ["started", "finished"]
    # Both lost (killed right after each): started then finished, each once.
    unaudited(runs, runs.start_run, "r3", "wf", "v1", "x", None, owner=dead_owner())
    unaudited(runs, runs.finish_run, "r3", "succeeded", [])
    assert [(r.event, r.status) for r in repair_run_records(runs)] == [("started", "succeeded"), ("finished", "succeeded")]
    assert [e["event"] for e in run_events(runs, "r3")] == ["started", "finished"]
    assert "status" not in run_events(runs, "r3")[0]  # a late `started` never makes a finished run look running
    assert runs.audit.run_summary("r3")["status"] == "succeeded" and runs.audit.verify().ok


def test_a_second_finish_after_a_resume_is_repaired_though_the_first_was_recorded(tmp_path: Path) -> None:
    runs = stores(tmp_path)
    runs.start_run("r4", "wf", "v1", "x", None, owner=dead_owner())
    runs.finish_run("r4", "failed", [], error={"message": "model down"})
    runs.mark_running("r4", owner=dead_owner())  # resumed by a person…
    unaudited(runs, runs.finish_run, "r4", "succeeded", [])  # …and killed after its second finish
    assert [(r.event, r.status) for r in repair_run_records(runs)] == [("finished", "succeeded")]
    assert [e["event"] for e in run_events(runs, "r4")] == ["started", "finished", "resumed", "finished"]
    assert repair_run_records(runs) == []


def test_a_live_owner_gets_its_grace_to_append_the_record_itself(tmp_path: Path) -> None:
    runs = stores(tmp_path)
    runs.start_run("r5", "wf", "v1", "x", None, owner=process_owner())  # this process: alive
    unaudited(runs, runs.finish_run, "r5", "succeeded", [])
    now = datetime.now(UTC)
    assert repair_run_records(runs, now=now, grace_s=60) == []  # it may be about to append it
    later = repair_run_records(runs, now=now + timedelta(seconds=61), grace_s=60)  # the next rounds still look at it
    assert [(r.run_id, r.event) for r in later] == [("r5", "finished")]


def test_processes_repairing_the_same_gap_at_once_append_it_once(tmp_path: Path) -> None:
    runs = stores(tmp_path)
    runs.start_run("r6", "wf", "v1", "x", None, owner=dead_owner())
    unaudited(runs, runs.finish_run, "r6", "succeeded", [])
    contenders = [stores(tmp_path) for _ in range(6)]
    barrier, results = threading.Barrier(len(contenders)), []

    def repair(store: RunStore) -> None:
        barrier.wait()
        results.append(repair_run_records(store))

    threads = [threading.Thread(target=repair, args=(store,)) for store in contenders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(len(r) for r in results) == [0] * 5 + [1]
    assert [e["event"] for e in run_events(runs, "r6")] == ["started", "finished"]
    assert runs.audit.verify().ok


async def test_recovery_repairs_the_chain_as_it_recovers_orphans(harness, tmp_path: Path) -> None:
    h = harness()
    h.runs.audit = AuditStore(f"sqlite:///{tmp_path / 'audit.sqlite'}")
    h.runs.start_run("r7", "wf", "v1", "x", None, owner=dead_owner())
    unaudited(h.runs, h.runs.finish_run, "r7", "succeeded", [])
    assert await recover_orphans(h.runner, workflow_resolver({}, [tmp_path])) == []  # no orphan: it had finished
    assert [(e["event"], e.get("repaired")) for e in run_events(h.runs, "r7")] == [("started", None), ("finished", True)]
    assert h.runs.audit.verify().ok
