"""Fold audit records into per-run summaries (the run list and its filters read these)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flotilla.audit import semconv as sc

__all__ = ["RunSummary", "fold_span", "fold_run_event", "empty_summary", "iso_from_ns", "VERDICT_RANK"]

VERDICT_RANK = {None: 0, "allow": 1, "redact": 2, "block": 3}
"""The run's verdict is the strongest any rail gave."""

RunSummary = dict[str, Any]


def iso_from_ns(ns: int | None) -> str | None:
    if ns is None:
        return None
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def empty_summary(run_id: str) -> RunSummary:
    return {
        "run_id": run_id,
        "trace_id": None,
        "workflow": None,
        "workflow_version": None,
        "status": None,
        "initiator": None,
        "sensitivity": None,
        "started_at": None,
        "ended_at": None,
        "duration_ms": None,
        "models": [],
        "tools": [],
        "agents": [],
        "verdict": None,
        "rail_checks": 0,
        "blocked": 0,
        "escalated": False,
        "input_tokens": 0,
        "output_tokens": 0,
        "cost_usd": 0.0,
        "spans": 0,
        "remote_calls": 0,
        "error": None,
        "last_seq": 0,
    }


def rail_decisions(span: dict[str, Any]) -> list[dict[str, Any]]:
    """Rail decisions on a span payload, as recorded: `gen_ai.guardrail.result` events (or the
    older `flotilla.rail` ones), or a span that is itself a rail check."""
    found = [ev["attributes"] for ev in span.get("events", ()) if sc.is_rail_event(ev.get("name"))]
    if sc.rail_fields(span.get("attributes", {})) is not None:
        found.append(span["attributes"])
    return found


def fold_span(summary: RunSummary, span: dict[str, Any]) -> None:
    attrs = span.get("attributes", {})
    op = attrs.get(sc.OPERATION)
    summary["spans"] += 1
    summary["trace_id"] = summary["trace_id"] or span.get("trace_id")
    start, end = iso_from_ns(span.get("start")), iso_from_ns(span.get("end"))
    if start and (summary["started_at"] is None or start < summary["started_at"]):
        summary["started_at"] = start
    if end and (summary["ended_at"] is None or end > summary["ended_at"]):
        summary["ended_at"] = end
    if op == "invoke_workflow":
        summary["workflow"] = attrs.get(sc.WORKFLOW) or summary["workflow"]
        summary["workflow_version"] = attrs.get(sc.WORKFLOW_VERSION) or summary["workflow_version"]
        summary["initiator"] = attrs.get(sc.INITIATOR) or summary["initiator"]
        summary["sensitivity"] = attrs.get(sc.SENSITIVITY) or summary["sensitivity"]
        status = attrs.get(sc.RUN_STATUS) or attrs.get("flotilla.status") or ("failed" if span.get("status") == "ERROR" else "succeeded")
        summary["status"] = status
        if span.get("status") == "ERROR":
            summary["error"] = span.get("status_message") or attrs.get("error.type")
        if span.get("start") and span.get("end"):
            summary["duration_ms"] = (span["end"] - span["start"]) / 1e6
    elif op == "invoke_agent":
        _add(summary["agents"], attrs.get(sc.AGENT_NAME))
    elif op == "chat":
        _add(summary["models"], attrs.get("gen_ai.response.model") or attrs.get("gen_ai.request.model"))
        summary["input_tokens"] += int(attrs.get("gen_ai.usage.input_tokens") or 0)
        summary["output_tokens"] += int(attrs.get("gen_ai.usage.output_tokens") or 0)
        if attrs.get(sc.MODEL_LOCAL) is False:
            summary["remote_calls"] += 1
    elif op == "execute_tool":
        _add(summary["tools"], attrs.get(sc.TOOL_NAME))
    summary["cost_usd"] += float(attrs.get(sc.COST_USD) or 0.0)
    if attrs.get(sc.ESCALATED):
        summary["escalated"] = True
    for decision in rail_decisions(span):
        verdict = (sc.rail_fields(decision) or {}).get("verdict")
        summary["rail_checks"] += 1
        if verdict == "block":
            summary["blocked"] += 1
        if VERDICT_RANK.get(verdict, 0) > VERDICT_RANK.get(summary["verdict"], 0):
            summary["verdict"] = verdict


def fold_run_event(summary: RunSummary, event: dict[str, Any]) -> None:
    """A `run` record (from the run store): lifecycle facts that win over what spans imply."""
    for key in ("workflow", "workflow_version", "initiator", "sensitivity", "status"):
        if event.get(key):
            summary[key] = event[key]
    if event.get("error"):
        summary["error"] = event["error"].get("message") if isinstance(event["error"], dict) else str(event["error"])
    if event.get("started_at") and summary["started_at"] is None:
        summary["started_at"] = event["started_at"]
    if event.get("ended_at"):
        summary["ended_at"] = max(summary["ended_at"] or "", event["ended_at"])


def _add(values: list[str], value: Any) -> None:
    if value and value not in values:
        values.append(str(value))
