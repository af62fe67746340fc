"""Telemetry and the audit trail: GenAI spans, the hash-chained store, verify, prune, exports.

Names are loaded lazily: every package imports `flotilla.audit.errors`, and that must stay cheap.
"""

from __future__ import annotations

from flotilla.audit.lazy import lazy_exports


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
    "AuditStore": "flotilla.audit.store",
    "AuditStoreError": "flotilla.audit.store",
    "NewRecord": "flotilla.audit.store",
    "AuditSpanExporter": "flotilla.audit.exporter",
    "SanitizingExporter": "flotilla.audit.exporter",
    "ContentPolicy": "flotilla.audit.sanitize",
    "Sanitizer": "flotilla.audit.sanitize",
    "SignedMark": "flotilla.audit.chain",
    "VerifyReport": "flotilla.audit.chain",
    "Telemetry": "flotilla.audit.telemetry",
    "audit_exporters": "flotilla.audit.setup",
    "open_audit_store": "flotilla.audit.setup",
}


__getattr__ = lazy_exports(__name__, _WHERE)
