"""Telemetry and the audit trail: GenAI spans, the hash-chained store, verify, prune, exports.

Names are loaded lazily: every package imports `audit.errors`, and that must stay cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = [
    "AuditStore",
    "AuditStoreError",
    "NewRecord",
    "AuditSpanExporter",
    "SanitizingExporter",
    "ContentPolicy",
    "Sanitizer",
    "SignedMark",
    "VerifyReport",
    "Telemetry",
    "audit_exporters",
    "open_audit_store",
]

_WHERE = {
    "AuditStore": "audit.store",
    "AuditStoreError": "audit.store",
    "NewRecord": "audit.store",
    "AuditSpanExporter": "audit.exporter",
    "SanitizingExporter": "audit.exporter",
    "ContentPolicy": "audit.sanitize",
    "Sanitizer": "audit.sanitize",
    "SignedMark": "audit.chain",
    "VerifyReport": "audit.chain",
    "Telemetry": "audit.telemetry",
    "audit_exporters": "audit.setup",
    "open_audit_store": "audit.setup",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'audit' has no attribute {name!r}")
