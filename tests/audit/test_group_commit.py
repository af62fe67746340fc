"""Appends from many threads at once share transactions and still make one intact chain."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import event

from flotilla.audit.runs import RunStore
from flotilla.audit.store import AuditStore, AuditStoreError, NewRecord

THREADS, EACH = 16, 5


def test_concurrent_appends_all_land_in_one_verified_chain_and_a_bad_one_fails_alone(sqlite_store: AuditStore) -> None:
    commits: list[int] = []
    event.listen(sqlite_store.engine, "commit", lambda conn: commits.append(1))
    start = threading.Barrier(THREADS + 1)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        start.wait()
        for i in range(EACH):
            sqlite_store.append([NewRecord("span", {"n": n, "i": i}, f"run-{n}")])

    def bad() -> None:
        start.wait()
        try:
            sqlite_store.append([NewRecord("span", {1: "mixed key types", "y": 2}, "run-bad")])
        except AuditStoreError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(THREADS)] + [threading.Thread(target=bad)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(errors) == 1  # the record that cannot be serialised failed its own caller only
    assert sqlite_store.count() == THREADS * EACH and sqlite_store.verify().ok
    for n in range(THREADS):
        assert [r.payload["i"] for r in sqlite_store.run_records(f"run-{n}")] == list(range(EACH))  # each caller's order kept
    assert sqlite_store.run_records("run-bad") == []
    assert len(commits) <= THREADS * EACH  # never more transactions than appends


def test_run_store_writes_from_many_threads_are_each_on_disk_when_they_return(tmp_path: Path, sqlite_store: AuditStore) -> None:
    runs = RunStore(f"sqlite:///{tmp_path / 'runs.sqlite'}", audit=sqlite_store)
    start = threading.Barrier(THREADS)

    def one(n: int) -> None:
        start.wait()
        runs.start_run(f"run-{n}", "wf", "v1", f"input {n}", None)
        assert runs.get_run(f"run-{n}") is not None  # committed before start_run returned
        runs.finish_run(f"run-{n}", "succeeded", [], output={"n": n})

    threads = [threading.Thread(target=one, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for n in range(THREADS):
        record = runs.get_run(f"run-{n}")
        assert record is not None and record.status == "succeeded" and record.output == {"n": n}
    assert sqlite_store.verify().ok and sqlite_store.count() == 2 * THREADS  # started + finished per run
    runs.engine.dispose()


@pytest.mark.parametrize("kind", ["nonsense"])
def test_an_unknown_kind_is_refused_before_it_joins_a_group(sqlite_store: AuditStore, kind: str) -> None:
    with pytest.raises(AuditStoreError, match="unknown audit record kind"):
        sqlite_store.append([NewRecord(kind, {})])
    assert sqlite_store.count() == 0
