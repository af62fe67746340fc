"""Spans through the real SDK pipeline into the store and a local OTLP receiver: content policy and secrets."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from opentelemetry.trace import Status, StatusCode

from flotilla.audit import semconv as sc
from flotilla.audit.exporter import AuditSpanExporter
from flotilla.audit.sanitize import ContentPolicy, Sanitizer
from flotilla.audit.setup import audit_exporters
from flotilla.audit.store import AuditStore
from flotilla.audit.telemetry import Telemetry
from tests.audit.factory import RunSpec, emit_run, sync_telemetry
from tests.audit.otlp_receiver import OtlpReceiver, attrs_of

FAKE_SECRETS = {
    "model_api_key": "sk-test-FAKE0123456789abcdefABCDEF",
    "audit_token": "compliance-token-7d1f0c2e9b",
    "mcp_bearer": "mcp-gw-b3c8a1e5f7d2",
    "collector_token": "otlp-collector-5e6f7a8b9c",
}


def email_redactor(text: str) -> str:
    return re.sub(r"[\w.+-]+@[\w-]+\.[\w.]+", "<EMAIL_ADDRESS>", text)


def broken_redactor(text: str) -> str:
    raise RuntimeError("the PII engine is not loaded")


def _chat_content(store: AuditStore, run_id: str) -> dict[str, object]:
    chats = [r.payload for r in store.run_records(run_id) if r.kind == "span" and r.payload["attributes"].get(sc.OPERATION) == "chat"]
    return chats[0]["attributes"]


@pytest.mark.parametrize(
    ("policy", "redact", "expect"),
    [
        ("off", email_redactor, None),
        ("redacted", email_redactor, "redacted"),
        ("redacted", None, None),  # no redactor configured: nothing unredacted may leave
        ("redacted", broken_redactor, None),  # a failing redactor drops the content, keeps the span
        ("full", None, "full"),
    ],
)
def test_content_policy(sqlite_store: AuditStore, policy: str, redact, expect: str | None) -> None:
    tel = sync_telemetry([AuditSpanExporter(sqlite_store, Sanitizer(ContentPolicy.parse(policy), redact=redact))])
    emit_run(tel.tracer, RunSpec("run-c"))
    tel.shutdown()
    attrs = _chat_content(sqlite_store, "run-c")
    assert attrs["gen_ai.usage.input_tokens"] == 120  # not content: always kept
    content = attrs.get("gen_ai.input.messages")
    if expect is None:
        assert content is None and "gen_ai.output.messages" not in attrs
    elif expect == "redacted":
        assert "<EMAIL_ADDRESS>" in content and "jane.doe@acme.example" not in content
    else:
        assert "jane.doe@acme.example" in content


def test_every_span_names_its_run(sqlite_store: AuditStore) -> None:
    tel = sync_telemetry([AuditSpanExporter(sqlite_store)])
    emit_run(tel.tracer, RunSpec("run-ids"))
    tel.shutdown()
    with sqlite_store.engine.connect() as conn:
        orphans = conn.execute(sa.text("SELECT count(*) FROM audit_records WHERE run_id IS NULL")).scalar_one()
    assert orphans == 0
    assert sqlite_store.run_summary("run-ids")["spans"] == 1 + 4 + 4 + 1


def test_bad_policy_is_a_config_error() -> None:
    from flotilla.audit.errors import ConfigError

    with pytest.raises(ConfigError, match="off, redacted, full"):
        Sanitizer("everything")


def test_fake_secrets_never_reach_the_store_or_otlp(sqlite_store: AuditStore, monkeypatch: pytest.MonkeyPatch) -> None:
    with OtlpReceiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"authorization=Bearer {FAKE_SECRETS['collector_token']}")
        sanitizer = Sanitizer("full", secrets=FAKE_SECRETS.values())  # even with full content
        sqlite_store.sanitizer = sanitizer
        tel = Telemetry(audit_exporters(sqlite_store, sanitizer))  # the production wiring: batched processors
        tracer = tel.tracer
        emit_run(tracer, RunSpec("run-secret", extra_attrs={"http.request.header.authorization": f"Bearer {FAKE_SECRETS['mcp_bearer']}"}))
        with tracer.start_as_current_span("chat frontier", attributes={sc.OPERATION: "chat", sc.RUN_ID: "run-secret"}) as span:
            span.set_attribute("gen_ai.input.messages", json.dumps([{"role": "user", "content": f"my key is {FAKE_SECRETS['model_api_key']}, token {FAKE_SECRETS['audit_token']}"}]))
            span.set_attribute("flotilla.model.api_key", FAKE_SECRETS["model_api_key"])
            span.set_attribute("flotilla.endpoint.headers", [f"Authorization: Bearer {FAKE_SECRETS['mcp_bearer']}", "Accept: application/json"])
            span.add_event("exception", {"exception.message": f"401 for api_key={FAKE_SECRETS['model_api_key']}"})
            span.set_status(Status(StatusCode.ERROR, f"upstream said: invalid x-api-key {FAKE_SECRETS['model_api_key']}"))
        sqlite_store.record("config", {"change": "model endpoint", "headers": {"Authorization": f"Bearer {FAKE_SECRETS['model_api_key']}"}})
        tel.flush()
        tel.shutdown()

        # OTLP received real, decoded spans (with the collector header from the standard env var)...
        names = {s.name for s in receiver.spans()}
        assert "invoke_workflow document_triage" in names and "chat frontier" in names
        assert receiver.headers[0]["authorization"] == f"Bearer {FAKE_SECRETS['collector_token']}"
        root = next(s for s in receiver.spans() if s.name.startswith("invoke_workflow"))
        assert attrs_of(root)[sc.RUN_ID] == "run-secret"
        assert attrs_of(root)["http.request.header.authorization"] == "[REDACTED]"
        payloads = b"".join(receiver.raw)

    # ...and no secret is anywhere: not in any table of the store, not in any OTLP payload.
    with sqlite_store.engine.connect() as conn:
        dump = "\n".join(
            repr(tuple(row))
            for table in ("audit_records", "audit_runs", "audit_head", "audit_anchors")
            for row in conn.execute(sa.text(f"SELECT * FROM {table}"))
        )
    assert "run-secret" in dump and "[REDACTED]" in dump
    for name, secret in FAKE_SECRETS.items():
        assert secret not in dump, name
        assert secret.encode() not in payloads, name
    assert sqlite_store.verify().ok


def test_spans_wait_in_the_spool_while_the_store_is_down(sqlite_store: AuditStore, tmp_path) -> None:
    spool = tmp_path / "audit-spool.jsonl"
    exporter = AuditSpanExporter(sqlite_store, Sanitizer("off"), spool=spool)
    tel = sync_telemetry([exporter])
    # The store breaks (its head table is gone), a run happens, then the store comes back.
    with sqlite_store.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE audit_head RENAME TO audit_head_away"))
    emit_run(tel.tracer, RunSpec("run-during-outage"))
    assert spool.is_file() and sqlite_store.run_summary("run-during-outage") is None
    with sqlite_store.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE audit_head_away RENAME TO audit_head"))
    emit_run(tel.tracer, RunSpec("run-after"))
    tel.shutdown()
    assert not spool.exists()
    assert sqlite_store.run_summary("run-during-outage")["spans"] == 10
    assert sqlite_store.run_summary("run-after")["spans"] == 10
    assert sqlite_store.verify().ok


def test_the_trace_file_carries_the_resource_on_every_line_as_the_sdk_writes_it(tmp_path: Path) -> None:
    from opentelemetry.sdk.resources import Resource

    from flotilla.audit.telemetry import JsonLinesSpanExporter, Telemetry

    telemetry = Telemetry([JsonLinesSpanExporter(tmp_path / "traces.jsonl")], service_name="probe")
    for n in range(3):
        with telemetry.tracer.start_as_current_span(f"step-{n}"):
            pass
    telemetry.shutdown()
    lines = [json.loads(line) for line in (tmp_path / "traces.jsonl").read_text().splitlines()]
    expected = json.loads(Resource.create({"service.name": "probe"}).to_json())  # its JSON is made once, the same
    assert [line["name"] for line in lines] == ["step-0", "step-1", "step-2"]
    assert all(line["resource"] == expected for line in lines)
