"""Finished OTel spans → sanitized audit payloads (and sanitized spans for OTLP)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import Status, format_span_id, format_trace_id

from flotilla.audit.sanitize import Sanitizer, is_content
from flotilla.audit.semconv import RUN_ID

__all__ = ["span_payload", "sanitized_span", "prime_content"]


def span_payload(span: ReadableSpan, sanitizer: Sanitizer) -> dict[str, Any]:
    """The record payload of one span: ids, name, times (ns), status, attributes, events."""
    ctx = span.context
    parent = span.parent
    status = span.status
    payload: dict[str, Any] = {
        "trace_id": format_trace_id(ctx.trace_id) if ctx else None,
        "span_id": format_span_id(ctx.span_id) if ctx else None,
        "parent_id": format_span_id(parent.span_id) if parent else None,
        "name": sanitizer.scrub(span.name),
        "kind": span.kind.name,
        "start": span.start_time,
        "end": span.end_time,
        "status": status.status_code.name,
        "attributes": _jsonable(sanitizer.attributes(span.attributes)),
        "events": [
            {"name": ev.name, "time": ev.timestamp, "attributes": _jsonable(sanitizer.attributes(ev.attributes))}
            for ev in span.events
        ],
    }
    if status.description:
        payload["status_message"] = sanitizer.scrub(status.description)
    return payload


def sanitized_span(span: ReadableSpan, sanitizer: Sanitizer) -> ReadableSpan:
    """A copy of `span` with the same sanitizing applied, for exporters outside the store."""
    status = span.status
    return ReadableSpan(
        name=sanitizer.scrub(span.name),
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=sanitizer.attributes(span.attributes),
        events=[Event(ev.name, sanitizer.attributes(ev.attributes), ev.timestamp) for ev in span.events],
        links=span.links,
        kind=span.kind,
        status=Status(status.status_code, sanitizer.text(status.description)),
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def prime_content(spans: Sequence[ReadableSpan], sanitizer: Sanitizer) -> None:
    """Redact the content of a whole export batch at once (see `Sanitizer.prime`)."""
    sanitizer.prime(_content_texts(spans))


def _content_texts(spans: Sequence[ReadableSpan]) -> Iterator[str]:
    for span in spans:
        for attrs in (span.attributes, *(ev.attributes for ev in span.events)):
            for key, value in (attrs or {}).items():
                if not is_content(key):
                    continue
                if isinstance(value, str):
                    yield value
                elif isinstance(value, (list, tuple)):
                    yield from (v for v in value if isinstance(v, str))


def run_id_of(span: ReadableSpan) -> str | None:
    attrs = span.attributes or {}
    value = attrs.get(RUN_ID)
    return str(value) if value is not None else None


def _jsonable(attrs: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in attrs.items()}
