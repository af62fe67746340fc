"""`flotilla audit …` against a real store filled through the exporter."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.sqlite import SqliteSaver
from typer.testing import CliRunner

from flotilla.audit.exporter import AuditSpanExporter
from flotilla.audit.store import AuditStore
from flotilla.runtime.cli_audit import audit_app
from tests.audit.factory import RunSpec, emit_run, sync_telemetry

KEY = "cli-test-hmac-key"


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FLOTILLA_CONFIG", raising=False)
    monkeypatch.delenv("FLOTILLA_AUDIT_URL", raising=False)
    monkeypatch.setenv("FLOTILLA_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FLOTILLA_AUDIT_HMAC_KEY", KEY)
    store = AuditStore(f"sqlite:///{tmp_path / 'data' / 'audit.sqlite'}", hmac_key=KEY)
    tel = sync_telemetry([AuditSpanExporter(store)])
    emit_run(tel.tracer, RunSpec("run-ok"))
    emit_run(tel.tracer, RunSpec("run-blocked", block_at="decide", initiator="mcp:claude-desktop"))
    emit_run(tel.tracer, RunSpec("run-esc", escalate=True, workflow="research"))
    tel.shutdown()
    store.close()
    return tmp_path / "data"


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(audit_app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_runs_filters_and_json(data_dir: Path) -> None:
    code, out, _ = cli("runs", "--json")
    assert code == 0 and {r["run_id"] for r in json.loads(out)} == {"run-ok", "run-blocked", "run-esc"}
    assert [r["run_id"] for r in json.loads(cli("runs", "--verdict", "block", "--json")[1])] == ["run-blocked"]
    assert [r["run_id"] for r in json.loads(cli("runs", "--escalated", "--json")[1])] == ["run-esc"]
    assert [r["run_id"] for r in json.loads(cli("runs", "--workflow", "research", "--json")[1])] == ["run-esc"]
    assert [r["run_id"] for r in json.loads(cli("runs", "--initiator", "mcp:claude-desktop", "--json")[1])] == ["run-blocked"]
    assert [r["run_id"] for r in json.loads(cli("runs", "--model", "frontier-large", "--json")[1])] == ["run-esc"]
    assert [r["run_id"] for r in json.loads(cli("runs", "--status", "succeeded", "--not-escalated", "--json")[1])] == ["run-ok"]
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%d")
    assert json.loads(cli("runs", "--since", tomorrow, "--json")[1]) == []
    code, out, _ = cli("runs")
    assert code == 0 and "run-blocked" in out and "3 run(s)" in out
    code, _, err = cli("runs", "--verdict", "maybe")
    assert code == 2 and "allow, redact, block" in err


def test_show_prints_the_span_tree(data_dir: Path) -> None:
    code, out, _ = cli("show", "run-blocked")
    assert code == 0
    assert "invoke_workflow document_triage" in out and "execute_tool erp.lookup_vendor" in out
    assert "llama-guard:S7=block" in out and "120→40 tok" in out and "output_schema=pass" in out
    code, _, err = cli("show", "no-such-run")
    assert code == 1 and "no run 'no-such-run'" in err


def test_verify_names_the_first_broken_record(data_dir: Path) -> None:
    code, out, _ = cli("verify")
    assert code == 0 and "chain intact" in out and "signed head verified" in out
    code, out, _ = cli("head", "-o", "head.json")
    assert code == 0 and json.loads(Path("head.json").read_text())["signature"]
    # Someone quietly changes which model answered in one chat span.
    with sqlite3.connect(data_dir / "audit.sqlite") as conn:
        (seq,) = conn.execute("SELECT min(seq) FROM audit_records WHERE kind = 'span' AND payload LIKE '%smollm2-135m%'").fetchone()
        conn.execute("UPDATE audit_records SET payload = replace(payload, 'smollm2-135m', 'gpt-x') WHERE seq = ?", (seq,))
    code, _, err = cli("verify")
    assert code == 1 and f"BROKEN at record {seq}" in err and "edited" in err
    code, out, _ = cli("verify", "--json")
    assert code == 1 and json.loads(out)["broken_seq"] == seq


def test_export_json_and_html(data_dir: Path, tmp_path: Path) -> None:
    code, _, _ = cli("export", "run-blocked", "--format", "json", "-o", str(tmp_path / "run.json"))
    bundle = json.loads((tmp_path / "run.json").read_text())
    assert code == 0 and bundle["run"]["status"] == "blocked" and bundle["chain"]["ok"]
    assert all(r["run_id"] == "run-blocked" for r in bundle["records"])
    code, _, _ = cli("export", "run-blocked", "--format", "html", "-o", str(tmp_path / "run.html"))
    html = (tmp_path / "run.html").read_text()
    assert code == 0 and "<style>" in html and "llama-guard" in html and 'id="audit-bundle"' in html
    assert "http://" not in html and "https://" not in html and "<link" not in html  # self-contained
    code, out, _ = cli("verify", "--export", str(tmp_path / "run.json"))
    assert code == 0 and "intact" in out and "signed head verified" in out
    bundle["records"][2]["payload"]["name"] = "something else"
    (tmp_path / "run.json").write_text(json.dumps(bundle))
    code, _, err = cli("verify", "--export", str(tmp_path / "run.json"))
    assert code == 1 and f"record {bundle['records'][2]['seq']} was edited" in err
    code, _, err = cli("export", "run-blocked", "--format", "pdf")
    assert code == 2 and "json or html" in err


def test_prune_removes_old_records_and_checkpoints(data_dir: Path) -> None:
    # LangGraph checkpoints for two finished runs and one that is not in the audit window.
    with SqliteSaver.from_conn_string(str(data_dir / "checkpoints.sqlite")) as saver:
        for thread in ("run-ok", "run-blocked", "run-later"):
            cfg = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
            saver.put(cfg, empty_checkpoint(), {"source": "loop", "step": 1}, {})
    # The CLI takes whole seconds: the cut-off is the next full second, later records come after it.
    cutoff = (datetime.now(UTC) + timedelta(seconds=1)).replace(microsecond=0)
    time.sleep(max(0.0, (cutoff - datetime.now(UTC)).total_seconds()) + 0.01)
    store = AuditStore(f"sqlite:///{data_dir / 'audit.sqlite'}", hmac_key=KEY)
    tel = sync_telemetry([AuditSpanExporter(store)])
    emit_run(tel.tracer, RunSpec("run-later"))
    tel.shutdown()
    store.close()
    code, out, _ = cli("prune", "--before", cutoff.strftime("%Y-%m-%dT%H:%M:%S"), "--yes")
    assert code == 0, out
    assert "3 finished runs" in out and "checkpoints removed for 2 runs" in out
    remaining = {r["run_id"] for r in json.loads(cli("runs", "--json")[1])}
    assert remaining == {"run-later"}
    with SqliteSaver.from_conn_string(str(data_dir / "checkpoints.sqlite")) as saver:
        threads = {c.config["configurable"]["thread_id"] for c in saver.list(None)}
    assert threads == {"run-later"}
    code, out, _ = cli("verify")
    assert code == 0 and "chain intact" in out
