"""The audit store suite: every test runs on SQLite and on a real PostgreSQL cluster."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from flotilla.audit.chain import record_hash
from flotilla.audit.exporter import AuditSpanExporter
from flotilla.audit.query import RunFilter, list_runs
from flotilla.audit.sanitize import Sanitizer
from flotilla.audit.schema import VERSION_TABLE, metadata
from flotilla.audit.store import AuditStore, NewRecord
from tests.audit.conftest import HMAC_KEY
from tests.audit.pg import new_database
from tests.audit.factory import RunSpec, emit_run, sync_telemetry


def _records(n: int, run_id: str = "r-1") -> list[NewRecord]:
    return [NewRecord("span", {"n": i, "attributes": {}, "name": f"s{i}"}, run_id) for i in range(n)]


def _exec(store: AuditStore, sql: str, **params: object) -> None:
    with store.engine.begin() as conn:
        conn.execute(sa.text(sql), params)


def test_appends_form_one_signed_chain(store: AuditStore) -> None:
    assert store.append(_records(5)) == 5
    assert store.append(_records(3)) == 8
    store.record("approval", {"run_id": "r-1", "approver": "bob", "decision": "approved"}, run_id="r-1")
    report = store.verify()
    assert report.ok and report.checked == 9 and report.signed
    head = store.head()
    assert head is not None and head.seq == 9 and head.valid(HMAC_KEY)
    kinds = [r.kind for r in store.run_records("r-1")]
    assert kinds == ["span"] * 8 + ["approval"]


def test_edit_is_detected_and_named(store: AuditStore) -> None:
    store.append(_records(10))
    _exec(store, "UPDATE audit_records SET payload = :p WHERE seq = 4", p='{"n":999}')
    report = store.verify()
    assert not report.ok and report.broken_seq == 4 and "edited" in report.reason


def test_delete_is_detected(store: AuditStore) -> None:
    store.append(_records(10))
    _exec(store, "DELETE FROM audit_records WHERE seq = 6")
    report = store.verify()
    assert not report.ok and report.broken_seq == 6 and "missing" in report.reason


def test_forged_insert_is_detected(store: AuditStore) -> None:
    store.append(_records(10))
    # The attacker replaces record 5 with a forged one that links correctly to record 4.
    with store.engine.begin() as conn:
        prev = conn.execute(sa.text("SELECT hash FROM audit_records WHERE seq = 4")).scalar_one()
        conn.execute(sa.text("DELETE FROM audit_records WHERE seq = 5"))
        payload = '{"forged":true}'
        digest = record_hash(5, "span", "r-1", "2026-01-01T00:00:00.000000Z", payload, prev)
        conn.execute(
            sa.text("INSERT INTO audit_records (seq, kind, run_id, recorded_at, payload, prev_hash, hash) VALUES (5, 'span', 'r-1', '2026-01-01T00:00:00.000000Z', :p, :prev, :h)"),
            {"p": payload, "prev": prev, "h": digest},
        )
    report = store.verify()
    assert not report.ok and report.broken_seq == 6 and "predecessor" in report.reason


def test_truncated_tail_is_detected(store: AuditStore) -> None:
    store.append(_records(10))
    _exec(store, "DELETE FROM audit_records WHERE seq > 7")
    report = store.verify()
    assert not report.ok and report.broken_seq == 8 and "truncated" in report.reason


def test_rewritten_chain_fails_without_the_key(store: AuditStore) -> None:
    store.append(_records(6))
    # Rewrite record 3 and re-hash everything after it, then re-sign the head with a guessed key.
    forger = AuditStore(store.url, hmac_key=b"attacker-guess", migrate_schema=False)
    with forger.engine.begin() as conn:
        rows = conn.execute(sa.text("SELECT seq, kind, run_id, recorded_at, payload, prev_hash FROM audit_records ORDER BY seq")).all()
        prev = None
        for row in rows:
            payload = '{"rewritten":true}' if row.seq == 3 else row.payload
            link = row.prev_hash if prev is None else prev
            digest = record_hash(row.seq, row.kind, row.run_id, row.recorded_at, payload, link)
            conn.execute(sa.text("UPDATE audit_records SET payload=:p, prev_hash=:l, hash=:h WHERE seq=:s"), {"p": payload, "l": link, "h": digest, "s": row.seq})
            prev = digest
        conn.execute(sa.text("UPDATE audit_head SET hash = :h"), {"h": prev})
    forger.close()
    report = store.verify()
    assert not report.ok and "signature" in report.reason


def test_exported_head_detects_rollback(store: AuditStore) -> None:
    store.append(_records(4))
    old = store.head()
    store.append(_records(4))
    pinned = store.head()  # exported and kept outside the store
    assert store.verify(pinned=pinned).ok
    # Roll back to the first four records and replay the old signed head: the store alone cannot tell...
    with store.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM audit_records WHERE seq > 4"))
        conn.execute(sa.text("UPDATE audit_head SET seq = :s, hash = :h, recorded_at = :r, signature = :g"),
                     {"s": old.seq, "h": old.hash, "r": old.recorded_at, "g": old.signature})
    assert store.verify().ok
    # ...the exported head can.
    report = store.verify(pinned=pinned)
    assert not report.ok and report.broken_seq == 5 and "truncated" in report.reason


def test_prune_leaves_a_signed_checkpoint(store: AuditStore) -> None:
    store.append(_records(20, "old-run"))
    time.sleep(0.01)
    cutoff = datetime.now(UTC)
    time.sleep(0.01)
    store.append(_records(5, "new-run"))
    report = store.prune(cutoff)
    assert report.pruned == 20 and report.through_seq == 20
    assert store.count() == 6  # 5 kept + the checkpoint record
    assert store.verify().ok
    assert store.run_summary("old-run") is None and store.run_summary("new-run") is not None
    # Deleting the oldest remaining record is still caught against the anchor.
    _exec(store, "DELETE FROM audit_records WHERE seq = 21")
    assert store.verify().broken_seq == 21


def test_forged_anchor_is_detected(store: AuditStore) -> None:
    store.append(_records(5))
    cutoff = datetime.now(UTC) + timedelta(seconds=1)
    store.prune(cutoff)
    _exec(store, "UPDATE audit_anchors SET pruned = 1")
    report = store.verify()
    assert not report.ok and "checkpoint" in report.reason


def test_concurrent_writers_keep_one_chain(store: AuditStore) -> None:
    other = AuditStore(store.url, hmac_key=HMAC_KEY, migrate_schema=False)

    def write(s: AuditStore, run: str) -> None:
        for _ in range(15):
            s.append(_records(4, run))

    threads = [threading.Thread(target=write, args=(s, f"run-{i}")) for i, s in enumerate([store, other, store, other])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    other.close()
    assert store.count() == 4 * 15 * 4
    assert store.verify().ok


def test_spans_become_run_summaries_and_filters_work(store: AuditStore) -> None:
    tel = sync_telemetry([AuditSpanExporter(store, Sanitizer("full"))])
    day = 86_400 * 10**9
    base = time.time_ns() - 3 * day
    specs = [
        RunSpec("run-ok", started_ns=base),
        RunSpec("run-blocked", block_at="decide", initiator="mcp:claude-desktop", started_ns=base + day),
        RunSpec("run-escalated", escalate=True, workflow="research", initiator="http:ops", started_ns=base + 2 * day),
    ]
    for spec in specs:
        emit_run(tel.tracer, spec)
    tel.shutdown()

    ok = store.run_summary("run-ok")
    assert ok["workflow"] == "document_triage" and ok["status"] == "succeeded" and ok["initiator"] == "cli:alice"
    assert ok["models"] == ["smollm2-135m"] and ok["tools"] == ["erp.lookup_vendor"]
    assert ok["agents"] == ["analyze", "decide", "extract", "write"]
    assert ok["input_tokens"] == 120 + 130 + 140 + 150 and ok["verdict"] == "redact" and not ok["escalated"]
    blocked = store.run_summary("run-blocked")
    assert blocked["status"] == "blocked" and blocked["verdict"] == "block" and blocked["blocked"] == 1
    esc = store.run_summary("run-escalated")
    assert esc["escalated"] and "frontier-large" in esc["models"] and esc["cost_usd"] > 0
    assert esc["remote_calls"] == 1 and ok["remote_calls"] == 0

    ids = lambda **kw: [r["run_id"] for r in list_runs(store, RunFilter(**kw))]  # noqa: E731
    assert ids() == ["run-escalated", "run-blocked", "run-ok"]
    assert ids(workflow="research") == ["run-escalated"]
    assert ids(status="blocked") == ["run-blocked"]
    assert ids(verdict="block") == ["run-blocked"]
    assert ids(escalated=True) == ["run-escalated"]
    assert sorted(ids(escalated=False)) == ["run-blocked", "run-ok"]
    assert ids(model="frontier-large") == ["run-escalated"]
    assert ids(initiator="mcp:claude-desktop") == ["run-blocked"]
    since = datetime.fromtimestamp((base + day // 2) / 1e9, UTC)
    until = datetime.fromtimestamp((base + 3 * day // 2) / 1e9, UTC)
    assert ids(since=since, until=until) == ["run-blocked"]
    assert ids(search="CLAUDE") == ["run-blocked"]
    # Every span also produced its rail records, all in the chain.
    rails = [r for r in store.run_records("run-blocked") if r.kind == "rail"]
    assert any(r.payload["gen_ai.guardrail.result.value"] == "block" for r in rails)
    assert store.verify().ok


def test_migrations_create_exactly_the_schema_a_new_store_is_created_with(store_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    from flotilla.audit import migrate
    from flotilla.audit.store import _engine

    migrated = _engine(store_url)
    migrate.upgrade(migrated, "0001")  # Alembic runs every migration, as for an old store brought to head
    migrate.upgrade(migrated)
    other = f"sqlite:///{tmp_path / 'new.sqlite'}" if store_url.startswith("sqlite") else new_database(request.getfixturevalue("pg_server"))
    new = AuditStore(other, hmac_key=HMAC_KEY)  # a new store: its tables made from `metadata`, stamped at head
    try:
        for engine in (migrated, new.engine):
            with engine.connect() as conn:
                ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
                assert ctx.get_current_revision() == migrate.head_revision() == "0002"
                assert compare_metadata(ctx, metadata) == []
    finally:
        migrated.dispose()
        new.close()


def test_an_older_schema_is_upgraded_in_place(store_url: str) -> None:
    from flotilla.audit import migrate
    from flotilla.audit.store import _engine

    engine = _engine(store_url)
    migrate.upgrade(engine, "0001")
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO audit_runs (run_id, models, tools, agents, rail_checks, blocked, escalated, input_tokens, output_tokens, cost_usd, spans, last_seq) "
            "VALUES ('old-run', '[]', '[]', '[]', 0, 0, false, 0, 0, 0, 0, 0)"
        ))
    engine.dispose()
    upgraded = AuditStore(store_url, hmac_key=HMAC_KEY)
    assert upgraded.run_summary("old-run")["remote_calls"] == 0
    upgraded.close()


def test_a_store_at_head_opens_and_a_new_one_is_created_without_loading_alembic(store: AuditStore, tmp_path: Path) -> None:
    from alembic.script import ScriptDirectory

    from flotilla.audit import migrate

    scripts = Path(migrate.__file__).with_name("migrations")
    assert migrate.head_revision() == ScriptDirectory(str(scripts)).get_current_head()
    # A fresh process, as every `flotilla` command is: the schema is at head, so Alembic stays unloaded;
    # and a new store is created at head without it.
    for url in (store.url, f"sqlite:///{tmp_path / 'new.sqlite'}"):
        code = f"import sys; from flotilla.audit.store import AuditStore; AuditStore({url!r}).close(); print('alembic' in sys.modules)"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "False", url


def test_incremental_verify_checks_only_new_records(store: AuditStore) -> None:
    store.append(_records(10))
    head = store.head()
    store.append(_records(5))
    step = store.verify(after=(head.seq, head.hash))
    assert step.ok and step.checked == 5 and step.first_seq == 11
    _exec(store, "UPDATE audit_records SET payload = '{}' WHERE seq = 13")
    step = store.verify(after=(head.seq, head.hash))
    assert not step.ok and step.broken_seq == 13
