"""Retention across every store flotilla writes: runs.sqlite, checkpoints.sqlite, traces.jsonl,
the audit store and its spool — content per policy, and `audit prune` removing what is old.

Runs go through the real runtime (build_runtime) against a scripted OpenAI-compatible server,
and each check reads the files' bytes: what is not in the file is not kept.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.sqlite import SqliteSaver
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from typer.testing import CliRunner

from flotilla.audit.exporter import AuditSpanExporter
from flotilla.audit.runs import RunStore
from flotilla.audit.store import AuditStore
from flotilla.audit.trace_file import JsonLinesSpanExporter, prune_trace_files, trace_files
from flotilla.graphs import load_workflow
from flotilla.runtime.cli_audit import audit_app
from flotilla.runtime.settings import Settings, load_settings
from flotilla.runtime.wiring import build_runtime
from tests.support.scripted_openai import Reply, ScriptedOpenAI, by_schema, schema_name
from tests.support.servers import serve_app
from tests.support.triage import TRIAGE_ANSWERS
from tests.support.triage import FOUR_AGENT_TRIAGE

ALIASES = ("specialist-extract", "specialist-analyze", "specialist-decide", "specialist-write")
KEY = "retention-test-hmac-key"
INVOICE = (Path(__file__).resolve().parents[2] / "graphs" / "samples" / "invoice.txt").read_text()
PII = ("Jane Doe", "jane.doe@example.com", "4111 1111 1111 1111")
WITH_PII = INVOICE + "\nRequester: Jane Doe, jane.doe@example.com, paid with card 4111 1111 1111 1111.\n"
# The writer's note repeats the requester's e-mail: outputs carry PII too.
ANSWERS = {**TRIAGE_ANSWERS, "Note": {"subject": "Invoice INV-2026-0412 approved", "body": "Sent to jane.doe@example.com."}}


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in ("FLOTILLA_CONFIG", "FLOTILLA_AUDIT_URL", "FLOTILLA_AUDIT_CONTENT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FLOTILLA_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FLOTILLA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FLOTILLA_AUDIT_HMAC_KEY", KEY)
    return tmp_path / "data"


@pytest.fixture
def model_url():
    server = ScriptedOpenAI(default=by_schema(ANSWERS))
    with serve_app(server.app()) as url:
        yield url, server


def settings(url: str, content: str) -> Settings:
    models = {a: {"provider": "openai-compatible", "base_url": f"{url}/v1", "model": a, "max_retries": 0} for a in ALIASES}
    return load_settings(models=models, audit_content=content)


def run(config: Settings, *texts: str) -> list[Any]:
    """Runs the triage workflow on each text through the full runtime, then shuts it down (flushing spans)."""

    async def go() -> list[Any]:
        async with runtime.runner as runner:
            return [await runner.run(load_workflow(FOUR_AGENT_TRIAGE), text, initiator="cli:test") for text in texts]

    runtime = build_runtime(config)
    try:
        return asyncio.run(go())
    finally:
        runtime.close()


def files_holding(data_dir: Path, needle: str) -> list[str]:
    return sorted(p.name for p in data_dir.rglob("*") if p.is_file() and needle.encode() in p.read_bytes())


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(audit_app, list(args))
    return result.exit_code, result.stdout + result.stderr


def test_redacted_policy_leaves_no_raw_pii_in_any_store(env: Path, model_url) -> None:
    url, _ = model_url
    [result] = run(settings(url, "redacted"), WITH_PII)
    assert result.status == "succeeded", result.error
    stores = {p.name for p in env.iterdir()}
    assert {"runs.sqlite", "audit.sqlite", "traces.jsonl"} <= stores
    for value in PII:
        assert files_holding(env, value) == [], f"{value!r} kept"
    record = RunStore(f"sqlite:///{env / 'runs.sqlite'}").get_run(result.run_id)
    assert record.content == "redacted" and "<EMAIL>" in record.input and "<CREDIT_CARD>" in record.input
    assert record.input_sha256 == hashlib.sha256(WITH_PII.encode()).hexdigest()
    assert record.output["body"] == "Sent to <EMAIL>." and record.steps[-1]["output"]["body"] == "Sent to <EMAIL>."
    assert record.steps[0]["output"]["invoice_number"] == "INV-2026-0412"  # not PII: kept
    with SqliteSaver.from_conn_string(str(env / "checkpoints.sqlite")) as saver:
        assert list(saver.list(None)) == []  # a finished run leaves nothing to resume


def test_off_policy_keeps_no_content_only_hashes_and_sizes(env: Path, model_url) -> None:
    url, _ = model_url
    [result] = run(settings(url, "off"), WITH_PII)
    assert result.status == "succeeded", result.error
    for value in (*PII, "INV-2026-0412", "Northwind", "Sent to"):  # input, step outputs and the output alike
        assert files_holding(env, value) == [], f"{value!r} kept"
    record = RunStore(f"sqlite:///{env / 'runs.sqlite'}").get_run(result.run_id)
    assert record.content == "off" and record.input is None and record.output is None
    assert record.input_sha256 == hashlib.sha256(WITH_PII.encode()).hexdigest() and record.input_bytes == len(WITH_PII.encode())
    assert [s["agent"] for s in record.steps] == ["extract", "analyze", "decide", "write"]
    assert all("output" not in s and len(s["output_sha256"]) == 64 and s["ok"] for s in record.steps)


def test_a_failed_run_resumes_from_its_checkpoint_when_its_stored_input_is_gone(env: Path, model_url) -> None:
    url, server = model_url
    config = settings(url, "off")
    server.default = lambda body: Reply(status=400) if schema_name(body) == "Decision" else by_schema(ANSWERS)(body)
    [failed] = run(config, WITH_PII)
    assert failed.status == "failed"
    runs = RunStore(config.run_store_url)
    assert runs.get_run(failed.run_id).input is None

    server.default = by_schema(ANSWERS)

    async def resume() -> Any:
        async with runtime.runner as runner:
            return await runner.resume(load_workflow(FOUR_AGENT_TRIAGE), failed.run_id)

    runtime = build_runtime(config)
    try:
        resumed = asyncio.run(resume())
    finally:
        runtime.close()
    assert resumed.status == "succeeded", resumed.error
    assert [schema_name(b) for b in server.requests[-2:]] == ["Decision", "Note"]
    assert files_holding(env, "jane.doe@example.com") == []  # its checkpoint went when it finished


def test_prune_removes_old_content_from_every_store_and_the_chain_still_verifies(env: Path, model_url) -> None:
    url, server = model_url
    config = settings(url, "full")  # everything kept raw: prune alone must remove it
    decisions = []

    def second_decision_fails(body: dict[str, Any]) -> Reply:
        if schema_name(body) == "Decision":
            decisions.append(body)
            if len(decisions) == 2:
                return Reply(status=400)
        return by_schema(ANSWERS)(body)

    server.default = second_decision_fails
    ok, failed = run(config, INVOICE.replace("INV-2026-0412", "INV-2026-0413"), WITH_PII)
    assert ok.status == "succeeded" and failed.status == "failed"
    assert files_holding(env, "jane.doe@example.com")  # full: in the run store, the checkpoint, the traces, the audit store
    # A run still going (its process is elsewhere) and a record the audit store could not take yet.
    RunStore(config.run_store_url).start_run("still-running", "document_triage", "v1", "an unfinished invoice", "cli:test")
    with SqliteSaver.from_conn_string(str(env / "checkpoints.sqlite")) as saver:
        saver.put({"configurable": {"thread_id": "still-running", "checkpoint_ns": ""}}, empty_checkpoint(), {"source": "loop", "step": 1}, {})
    unreachable = AuditStore("postgresql+psycopg://flotilla@127.0.0.1:1/none", migrate_schema=False)
    spooler = AuditSpanExporter(unreachable, spool=env / "audit-spool.jsonl")
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spooler))
    provider.get_tracer("t").start_span("chat spooled", attributes={"flotilla.run_id": failed.run_id}).end()
    assert (env / "audit-spool.jsonl").is_file()

    code, out = cli("prune", "--before", (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%d"), "--yes")
    assert code == 0, out
    assert "run store: removed 2 finished runs" in out and "LangGraph checkpoints removed for 1 runs" in out
    assert "audit spool: removed 1 records" in out and "kept 1 unfinished runs" in out and "still-running" in out
    for value in (*PII, "INV-2026-0413", "Northwind"):
        assert files_holding(env, value) == [], f"{value!r} survived prune"
    runs = RunStore(config.run_store_url)
    assert runs.get_run(ok.run_id) is None and runs.get_run(failed.run_id) is None
    assert runs.get_run("still-running").input == "an unfinished invoice"
    with SqliteSaver.from_conn_string(str(env / "checkpoints.sqlite")) as saver:
        assert {c.config["configurable"]["thread_id"] for c in saver.list(None)} == {"still-running"}
    assert not (env / "audit-spool.jsonl").exists()
    code, out = cli("verify")
    assert code == 0 and "chain intact" in out, out
    store = AuditStore(config.audit_store_url, hmac_key=KEY)
    events = set(_checkpoint_events(store))
    assert {"prune", "prune_runs", "prune_langgraph_checkpoints", "prune_traces", "prune_audit_spool"} <= events
    store.close()


def _checkpoint_events(store: AuditStore) -> list[str]:
    with store.engine.connect() as conn:
        return [json.loads(row[4])["event"] for row in store.iter_chain(conn) if row[1] == "checkpoint"]


def _spans(provider: TracerProvider, count: int) -> None:
    tracer = provider.get_tracer("rotation")
    for i in range(count):
        tracer.start_span(f"span {i}", attributes={"payload": "x" * 200}).end()


def test_the_trace_file_rotates_at_its_cap_and_prune_trims_it(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    exporter = JsonLinesSpanExporter(path, max_bytes=4_000, backups=2)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _spans(provider, 200)  # ~150 kB of spans into a 3 × 4 kB budget
    exporter.shutdown()
    files = trace_files(path)
    assert [p.name for p in files] == ["traces.jsonl", "traces.jsonl.1", "traces.jsonl.2"]
    assert all(p.stat().st_size <= 4_000 for p in files)
    lines = [json.loads(line) for p in files for line in p.read_text().splitlines()]
    assert json.loads(path.read_text().splitlines()[-1])["name"] == "span 199"  # the newest spans are the ones kept
    report = prune_trace_files(path, datetime.now(UTC) + timedelta(seconds=1))
    assert report.lines == len(lines) and report.files == 2
    assert trace_files(path) == [path] and path.read_text() == ""
