"""The runner's RunStore, given the audit store, appends run lifecycle records to the chain."""

from __future__ import annotations

from pathlib import Path

from flotilla.audit.runs import RunStore
from flotilla.audit.store import AuditStore
from tests.audit.factory import FAKE_KEY_FOR_RUNS


def test_run_lifecycle_lands_in_the_chain(sqlite_store: AuditStore, tmp_path: Path) -> None:
    runs = RunStore(f"sqlite:///{tmp_path / 'runs.sqlite'}", audit=sqlite_store)
    runs.start_run("run-42", "document_triage", "3f2a9c1b7e4d", "invoice text", "cli:alice")
    summary = sqlite_store.run_summary("run-42")
    assert summary["status"] == "running" and summary["initiator"] == "cli:alice"
    runs.finish_run("run-42", "failed", [{"agent": "extract"}], error={"code": "model_error", "message": f"401 with api_key={FAKE_KEY_FOR_RUNS}"})
    assert runs.get_run("run-42").status == "failed"  # the runner's own record is unchanged
    records = sqlite_store.run_records("run-42")
    assert [r.payload["event"] for r in records] == ["started", "finished"]
    assert records[0].payload["input_sha256"] and "invoice text" not in str(records[0].payload)
    assert FAKE_KEY_FOR_RUNS not in str(records[1].payload)
    assert sqlite_store.run_summary("run-42")["status"] == "failed"
    assert sqlite_store.verify().ok
