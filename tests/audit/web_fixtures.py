"""A store with a handful of realistic runs, shared by the web and browser tests."""

from __future__ import annotations

import re
import time

from flotilla.audit.exporter import AuditSpanExporter
from flotilla.audit.sanitize import Sanitizer
from flotilla.audit.store import AuditStore
from tests.audit.factory import RunSpec, emit_run, sync_telemetry

TOKEN = "compliance-officer-token-for-tests"
DAY = 86_400 * 10**9


def pii_redactor(text: str) -> str:
    text = re.sub(r"[\w.+-]+@[\w-]+\.[\w.]+", "<EMAIL_ADDRESS>", text)
    return re.sub(r"\+\d[\d ]{7,}\d", "<PHONE_NUMBER>", text)


def fill(store: AuditStore) -> None:
    tel = sync_telemetry([AuditSpanExporter(store, Sanitizer("redacted", redact=pii_redactor))])
    now = time.time_ns()
    specs = [
        RunSpec("run-7f3a-ok", started_ns=now - 3 * DAY),
        RunSpec("run-91c2-blocked", block_at="decide", initiator="mcp:claude-desktop", started_ns=now - 2 * DAY),
        RunSpec("run-b5e0-escalated", escalate=True, workflow="research", initiator="http:ops-dashboard", started_ns=now - DAY),
        RunSpec("run-c4d8-ok", started_ns=now - DAY // 2, redact=False),
    ]
    for spec in specs:
        emit_run(tel.tracer, spec)
    tel.shutdown()
