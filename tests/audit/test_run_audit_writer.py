"""A run's `run` records off the run's path (audit/run_audit_writer.py): the start's record in the
background, the finish's after its row (or in the background too, as the runner asks); per-run
order kept, reads in the process find them, nothing lost, the chain verifies."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from flotilla.audit.runs import RunStore
from flotilla.audit.store import AuditStore
from flotilla.graphs.record_repair import repair_run_records


def stores(tmp: Path) -> RunStore:
    return RunStore(f"sqlite:///{tmp / 'runs.sqlite'}", audit=AuditStore(f"sqlite:///{tmp / 'audit.sqlite'}"))


def events(runs: RunStore, run_id: str) -> list[str]:
    return [r.payload["event"] for r in runs.audit.run_records(run_id) if r.kind == "run"]


def test_a_deferred_start_record_precedes_the_finish_and_both_are_on_disk_when_finish_returns(tmp_path: Path) -> None:
    runs = stores(tmp_path)
    runs.start_run("r1", "wf", "v1", "invoice text", "cli:alice", defer_audit=True)
    assert runs.get_run("r1").status == "running"  # the row is on disk when start_run returns
    runs.finish_run("r1", "succeeded", [{"agent": "extract"}], output={"ok": True})
    # No drain: finish_run returns once its row and both records are committed.
    assert events(runs, "r1") == ["started", "finished"]
    assert runs.audit.run_summary("r1")["status"] == "succeeded"
    assert runs.audit.verify().ok


def test_many_runs_started_and_finished_at_once_keep_each_runs_order(tmp_path: Path) -> None:
    runs = stores(tmp_path)
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            runs.start_run(f"r{i}", "wf", "v1", f"input {i}", None, defer_audit=True)
            runs.finish_run(f"r{i}", "succeeded" if i % 3 else "failed", [], error=None if i % 3 else {"message": "boom"})
        except BaseException as exc:  # noqa: BLE001 — reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for i in range(40):
        assert events(runs, f"r{i}") == ["started", "finished"], i
        assert runs.get_run(f"r{i}").status == ("succeeded" if i % 3 else "failed")
    assert runs.audit.count() == 80
    assert runs.audit.verify().ok


def test_a_start_record_the_chain_refused_is_repaired_from_the_row_and_the_run_still_finishes(tmp_path: Path) -> None:
    runs = stores(tmp_path)
    record_many = runs.audit.record_many
    refused = threading.Event()

    def refuse_the_start(entries):
        if any(payload.get("event") == "started" for _, payload, _ in entries):
            refused.set()
            raise OSError("disk full")
        return record_many(entries)

    runs.audit.record_many = refuse_the_start  # the chain's database refuses the start's record (batch and retry alike)
    try:
        runs.start_run("r1", "wf", "v1", "x", "alice", defer_audit=True)
        runs.finish_run("r1", "succeeded", [])  # the run's own outcome does not wait on the chain's failure
    finally:
        del runs.audit.record_many
    assert refused.is_set() and runs.get_run("r1").status == "succeeded"
    assert events(runs, "r1") == ["finished"]
    [repaired] = repair_run_records(runs, grace_s=0)
    assert (repaired.run_id, repaired.event) == ("r1", "started")
    assert sorted(events(runs, "r1")) == ["finished", "started"]
    assert runs.audit.verify().ok


def test_drain_waits_for_a_start_record_still_being_appended(tmp_path: Path) -> None:
    runs = stores(tmp_path)
    runs.start_run("r1", "wf", "v1", "x", None, defer_audit=True)
    runs.audit_writer.drain()
    assert events(runs, "r1") == ["started"]
    assert runs.audit.verify().ok


def test_a_deferred_finish_record_is_in_the_chain_for_any_reader_in_the_process(tmp_path: Path) -> None:
    runs = stores(tmp_path)
    appending = threading.Event()
    release = threading.Event()
    record_many = runs.audit.record_many

    def slow_finish(entries):
        if any(payload.get("event") == "finished" for _, payload, _ in entries):
            appending.set()
            release.wait(10)
        return record_many(entries)

    runs.audit.record_many = slow_finish  # the chain's commit of the finish is slow; the run is not held by it
    try:
        runs.start_run("r1", "wf", "v1", "x", None, defer_audit=True)
        runs.finish_run("r1", "succeeded", [], output={"ok": True}, defer_audit=True)
        assert runs.get_run("r1").status == "succeeded"  # the row is on disk when finish_run returns
        assert appending.wait(10)  # ... while its record is still being appended
        threading.Timer(0.2, release.set).start()
        assert events(runs, "r1") == ["started", "finished"]  # a read waits for the records in flight
    finally:
        release.set()
        del runs.audit.record_many
    assert runs.audit.run_summary("r1")["status"] == "succeeded"
    assert runs.audit.verify().ok


def test_records_queued_together_share_one_append_and_one_the_store_refuses_fails_alone(tmp_path: Path) -> None:
    runs = stores(tmp_path)
    record_many = runs.audit.record_many
    busy, hold = threading.Event(), threading.Event()
    appends: list[list[str]] = []

    def refusing(entries):
        if entries[0][2] == "r0":
            busy.set()
            hold.wait(10)  # the writer is busy with r0 while the others queue up
        appends.append([run_id for _, _, run_id in entries])
        if "bad" in appends[-1]:
            raise OSError("refused")
        return record_many(entries)

    runs.audit.record_many = refusing
    try:
        runs.audit_writer.later("r0", {"event": "started"})
        assert busy.wait(10)
        for run_id in ("r1", "bad", "r2"):
            runs.audit_writer.later(run_id, {"event": "started"})
        hold.set()
        runs.audit_writer.drain()
    finally:
        del runs.audit.record_many
    assert appends == [["r0"], ["r1", "bad", "r2"], ["r1"], ["bad"], ["r2"]]  # one append, then one at a time
    assert [events(runs, run_id) for run_id in ("r0", "r1", "bad", "r2")] == [["started"], ["started"], [], ["started"]]
    assert runs.audit.verify().ok


def test_the_writer_thread_ends_when_idle_and_the_next_record_starts_another(tmp_path: Path, monkeypatch) -> None:
    from flotilla.audit import run_audit_writer

    monkeypatch.setattr(run_audit_writer, "IDLE_S", 0.05)
    runs = stores(tmp_path)
    writer = runs.audit_writer
    writer.later("r1", {"event": "started"})
    writer.drain()
    first = writer._thread
    deadline = time.monotonic() + 10
    while writer._thread is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert first is not None and writer._thread is None  # a store no longer used keeps no thread
    first.join(10)
    assert not first.is_alive()
    writer.later("r2", {"event": "started"})
    writer.drain()
    assert events(runs, "r1") == ["started"] and events(runs, "r2") == ["started"]
    assert runs.audit.verify().ok


def test_the_writer_lingers_so_the_next_runs_records_join_its_append_and_a_waiter_ends_the_linger(tmp_path: Path, monkeypatch) -> None:
    from flotilla.audit import run_audit_writer

    monkeypatch.setattr(run_audit_writer, "LINGER_S", 60.0)  # only a waiter can end it within the test
    runs = stores(tmp_path)
    record_many = runs.audit.record_many
    appends: list[list[str]] = []

    def counted(entries):
        appends.append([run_id for _, _, run_id in entries])
        return record_many(entries)

    runs.audit.record_many = counted
    try:
        for run_id in ("r1", "r2", "r3"):  # one run's finish, the next runs' starts: arriving apart
            runs.audit_writer.later(run_id, {"event": "started"})
        waiter = threading.Thread(target=runs.audit_writer.drain)
        waiter.start()
        waiter.join(30)
        assert not waiter.is_alive()  # drain cut the 60 s linger short
    finally:
        del runs.audit.record_many
    assert appends == [["r1", "r2", "r3"]]  # one append, one fsync of the chain, for all three
    assert [events(runs, run_id) for run_id in ("r1", "r2", "r3")] == [["started"]] * 3
    assert runs.audit.verify().ok
