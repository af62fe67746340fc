"""The run store and the tool-call journal on SQLite and on PostgreSQL (`runs_url`): what lets
`flotilla serve` and `flotilla worker`s on several machines share one view of every run."""

from __future__ import annotations

import pytest

from flotilla.audit.errors import ConfigError
from flotilla.audit.runs import RunStore
from flotilla.runtime.settings import load_settings
from flotilla.tools.journal import ToolCallJournal


def test_two_processes_share_runs_and_tool_calls(store_url: str) -> None:
    serve, worker = RunStore(store_url), RunStore(store_url)  # e.g. serve on one machine, a worker on another
    journal_a, journal_b = ToolCallJournal(store_url), ToolCallJournal(store_url)
    try:
        serve.start_run("run-1", "document_triage", "v1", "Invoice INV-1 …", "alice", owner="host-a:1:0")
        assert worker.take_over("run-1", "host-a:1:0", "host-b:7:0")  # host-a died: host-b takes the run over
        assert not serve.take_over("run-1", "host-a:1:0", "host-c:9:0")  # once only
        journal_b.start("run-1:record:0", run_id="run-1", step="record", tool="ledger.record_decision")
        journal_b.finish("run-1:record:0", {"content": [{"type": "text", "text": "recorded"}]}, is_error=False)
        seen = journal_a.get("run-1:record:0")
        assert seen is not None and seen.state == "finished" and seen.result == {"content": [{"type": "text", "text": "recorded"}]}
        worker.finish_run("run-1", "succeeded", [{"agent": "extract"}], output={"subject": "ok"})
        record = serve.get_run("run-1")
        assert record is not None and record.status == "succeeded" and record.output == {"subject": "ok"}
        assert journal_a.forget_run("run-1") == 1 and journal_b.entries("run-1") == []
    finally:
        for journal in (journal_a, journal_b):
            journal.close()
        for store in (serve, worker):
            store.engine.dispose()


def test_a_runs_url_that_is_not_a_database_url_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOTILLA_RUNS_URL", "runs.sqlite")
    with pytest.raises(ConfigError, match="runs_url.*sqlite:///PATH or postgresql"):
        load_settings()
