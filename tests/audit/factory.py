"""Realistic run span trees, written through a real TracerProvider and the audit exporter.

A run looks like what the runner emits: invoke_workflow → invoke_agent (extract, analyze,
decide, write) → chat / execute_tool, with rail decisions as `gen_ai.guardrail.result` events.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Status, StatusCode, Tracer, set_span_in_context

from flotilla.audit import semconv as sc
from flotilla.audit.telemetry import Telemetry

MS = 1_000_000

PII_PROMPT = "Invoice from ACME GmbH, contact jane.doe@acme.example, phone +49 30 1234567, total 1,250.00 EUR"


@dataclass(frozen=True)
class RunSpec:
    run_id: str
    workflow: str = "document_triage"
    initiator: str = "cli:alice"
    model: str = "smollm2-135m"
    block_at: str | None = None
    """Agent whose output rail blocks (ends the run 'blocked')."""
    escalate: bool = False
    redact: bool = True
    started_ns: int | None = None
    extra_attrs: dict | None = None


def sync_telemetry(exporters: Sequence[SpanExporter]) -> Telemetry:
    """A Telemetry whose exporters run synchronously (deterministic tests): same spans, no batching."""
    tel = Telemetry(())
    for exporter in exporters:
        tel.provider.add_span_processor(SimpleSpanProcessor(exporter))
    return tel


def emit_run(tracer: Tracer, spec: RunSpec) -> None:
    t = spec.started_ns or time.time_ns()
    root_attrs = {
        sc.OPERATION: "invoke_workflow",
        sc.RUN_ID: spec.run_id,
        sc.WORKFLOW: spec.workflow,
        sc.WORKFLOW_VERSION: "3f2a9c1b7e4d",
        sc.INITIATOR: spec.initiator,
        sc.SENSITIVITY: "internal",
        **(spec.extra_attrs or {}),
    }
    root = tracer.start_span(f"invoke_workflow {spec.workflow}", start_time=t, attributes=root_attrs)
    ctx = set_span_in_context(root)
    root.add_event(sc.RAIL_EVENT, sc.rail_attributes(engine="nemo", rule="self_check_input", point="input", allowed=True, latency_ms=12.5))
    cursor = t + 15 * MS
    status = "succeeded"
    for i, agent in enumerate(("extract", "analyze", "decide", "write")):
        step = tracer.start_span(
            f"invoke_agent {agent}", context=ctx, start_time=cursor,
            attributes={sc.OPERATION: "invoke_agent", "gen_ai.agent.name": agent},
        )
        sctx = set_span_in_context(step)
        model = "frontier-large" if (spec.escalate and agent == "decide") else spec.model
        chat = tracer.start_span(
            f"chat {model}", context=sctx, start_time=cursor + 2 * MS,
            attributes={
                sc.OPERATION: "chat",
                "gen_ai.provider.name": sc.EMBEDDED_PROVIDER if model == spec.model else "openai",
                "gen_ai.request.model": model,
                "gen_ai.response.model": model,
                "gen_ai.agent.name": agent,
                "gen_ai.usage.input_tokens": 120 + 10 * i,
                "gen_ai.usage.output_tokens": 40 + 5 * i,
                "gen_ai.input.messages": json.dumps([{"role": "user", "content": PII_PROMPT}]),
                "gen_ai.output.messages": json.dumps([{"role": "assistant", "content": f'{{"step": "{agent}", "vendor": "ACME GmbH"}}'}]),
                sc.COST_USD: 0.0125 if model != spec.model else 0.0,
                sc.MODEL_LOCAL: model == spec.model,
                **({sc.ESCALATED: True, sc.ESCALATION_REASON: "schema invalid after repair"} if model != spec.model else {}),
            },
        )
        sc.evaluation_event(chat, "output_schema", passed=True)
        chat.end(end_time=cursor + (180 + 40 * i) * MS)
        end = cursor + (200 + 40 * i) * MS
        if agent == "analyze":
            tool = tracer.start_span(
                "execute_tool erp.lookup_vendor", context=sctx, start_time=end,
                attributes={
                    sc.OPERATION: "execute_tool",
                    "gen_ai.tool.name": "erp.lookup_vendor",
                    "gen_ai.tool.call.arguments": '{"vendor": "ACME GmbH"}',
                    "gen_ai.tool.call.result": '{"vendor_id": "V-1042", "status": "approved"}',
                },
            )
            tool.add_event(sc.RAIL_EVENT, sc.rail_attributes(engine="yara", rule="injection", point="tool-result", allowed=True, latency_ms=0.8))
            tool.end(end_time=end + 35 * MS)
            end += 40 * MS
        if agent == "extract" and spec.redact:
            step.add_event(sc.RAIL_EVENT, sc.rail_attributes(engine="presidio", rule="EMAIL_ADDRESS", point="agent-output", allowed=True, transformed=True, latency_ms=4.2, detail="1 entity redacted"))
        blocked = spec.block_at == agent
        step.add_event(sc.RAIL_EVENT, sc.rail_attributes(
            engine="llama-guard", rule="S7" if blocked else "safe", point="agent-output", allowed=not blocked,
            latency_ms=31.0, score=0.93 if blocked else 0.02, detail="privacy violation" if blocked else ""))
        if blocked:
            step.set_status(Status(StatusCode.ERROR, f"blocked at agent-output by llama-guard (S7)"))
            step.end(end_time=end + 32 * MS)
            status = "blocked"
            cursor = end + 32 * MS
            break
        step.end(end_time=end + 32 * MS)
        cursor = end + 35 * MS
    root.add_event(sc.RAIL_EVENT, sc.rail_attributes(engine="presidio", rule="pii", point="output", allowed=True, latency_ms=3.1))
    root.set_attribute(sc.RUN_STATUS, status)
    if status != "succeeded":
        root.set_status(Status(StatusCode.ERROR, "guardrail_violation"))
    root.end(end_time=cursor + 5 * MS)

FAKE_KEY_FOR_RUNS = "sk-runs-FAKEabcdef0123456789XYZ"
