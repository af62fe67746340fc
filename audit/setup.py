"""Wiring helpers the runtime calls: open the store and build the exporters for `Telemetry`.

    store = open_audit_store(settings.audit_url, hmac_key=..., sanitizer=sanitizer)
    telemetry = Telemetry(audit_exporters(store, sanitizer))   # + OTLP when OTEL_EXPORTER_OTLP_* is set
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from opentelemetry.sdk.trace.export import SpanExporter

from flotilla.audit.errors import ConfigError, MissingExtra
from flotilla.audit.exporter import AuditSpanExporter, SanitizingExporter
from flotilla.audit.sanitize import Sanitizer
from flotilla.audit.store import AuditStore
from flotilla.audit.telemetry import otlp_exporter_from_env

__all__ = ["open_audit_store", "require_driver", "audit_exporters"]


def open_audit_store(url: str, *, hmac_key: str | bytes | None = None, sanitizer: Sanitizer | None = None) -> AuditStore:
    require_driver(url)
    return AuditStore(url, hmac_key=hmac_key or None, sanitizer=sanitizer)


def require_driver(url: str, what: str = "audit store") -> None:
    """A PostgreSQL store needs the [postgres] extra (psycopg); say so instead of an ImportError."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return  # AuditStore reports a malformed URL itself
    if parsed.get_backend_name() != "postgresql":
        return
    driver = parsed.get_driver_name()
    if driver == "psycopg":
        MissingExtra.require(f"a PostgreSQL {what}", "postgres", "psycopg")
    elif MissingExtra.check("", "", driver) is not None:
        raise ConfigError(
            f"the {what} URL uses the {driver} driver, which is not installed: write postgresql+psycopg://… "
            "and pip install 'flotilla[postgres]'"
        )


def audit_exporters(
    store: AuditStore | None,
    sanitizer: Sanitizer,
    *,
    otlp: bool = True,
    spool: Path | None = None,
    also: Sequence[SpanExporter] = (),
) -> list[SpanExporter]:
    """The audit-store exporter, plus OTLP/HTTP when the OTLP env vars are set, plus `also` (the
    trace file), behind ONE `SanitizingExporter`: each span is sanitized (PII redacted) once and
    every destination gets the same sanitized copy.

    `spool` (e.g. `<data_dir>/audit-spool.jsonl`) keeps records while the store is unreachable.
    """
    exporters: list[SpanExporter] = list(also)
    if store is not None:
        exporters.append(AuditSpanExporter(store, sanitizer.passthrough(), spool=spool))
    remote = otlp_exporter_from_env() if otlp else None
    if remote is not None:
        exporters.append(remote)
    return [SanitizingExporter(exporters, sanitizer)] if exporters else []
