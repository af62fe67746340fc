"""Shutdown drains the audit export: a backlog is late, never lost."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from flotilla.audit import semconv as sc
from flotilla.audit.sanitize import Sanitizer
from flotilla.audit.setup import audit_exporters
from flotilla.audit.store import AuditStore
from flotilla.audit.telemetry import Telemetry

RUNS, STEPS = 40, 6


def slow_redactor(texts: Sequence[str]) -> list[str]:
    """A redactor that is behind (as spaCy is under load): every batch costs time."""
    time.sleep(0.05)
    return [text.replace("Maria", "<PERSON>") for text in texts]


def test_shutdown_with_a_backlog_loses_no_audit_record(sqlite_store: AuditStore) -> None:
    telemetry = Telemetry(audit_exporters(sqlite_store, Sanitizer("redacted", redact_many=slow_redactor), otlp=False))
    tracer = telemetry.tracer
    for run in range(RUNS):
        with tracer.start_as_current_span("invoke_workflow probe", attributes={sc.RUN_ID: f"run-{run}", sc.OPERATION: "invoke_workflow"}):
            for step in range(STEPS):
                with tracer.start_as_current_span(f"chat step-{step}", attributes={
                    sc.OPERATION: "chat", "gen_ai.input.messages": json.dumps([{"role": "user", "content": f"Maria, run {run} step {step}"}]),
                }):
                    pass
    # Every span is still queued (the batch processor exports every 5 s): shut down now.
    telemetry.shutdown()

    for run in range(RUNS):
        spans = [r for r in sqlite_store.run_records(f"run-{run}") if r.kind == "span"]
        assert len(spans) == STEPS + 1, f"run-{run} has {len(spans)} of {STEPS + 1} spans"
        assert all("Maria" not in json.dumps(r.payload) for r in spans)
    assert sqlite_store.count() == RUNS * (STEPS + 1)
    assert sqlite_store.verify().ok
