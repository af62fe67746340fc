"""Idempotency keys in the run store (the HTTP API's `Idempotency-Key`), on SQLite and PostgreSQL:
submits racing with one key from many threads claim one run; start_run fills in the claimed row."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from flotilla.audit.runs import RunStore, runs


def test_one_key_claims_one_run_however_many_race(store_url: str) -> None:
    store = RunStore(store_url)
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            holders = list(pool.map(lambda i: store.claim_run(f"run-{i}", "flow", "v1", "key-1", "api:test"), range(16)))
        assert len(set(holders)) == 1
        winner = holders[0]
        assert store.run_for_key("key-1") == winner and store.get_run(winner).status == "pending"
        store.start_run(winner, "flow", "v1", "the input", "api:test")  # the claimed row, now running
        record = store.get_run(winner)
        assert (record.status, record.input) == ("running", "the input")
        assert store.run_for_key("key-1") == winner  # the key stays with its run
        assert store.claim_run("run-other", "flow", "v1", "key-2", None) == "run-other"
        with store.engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(runs)).scalar() == 2
    finally:
        store.engine.dispose()
