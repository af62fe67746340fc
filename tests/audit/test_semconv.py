"""A document-triage run against a scripted OpenAI-compatible endpoint, as a third-party trace
viewer receives it over OTLP: span names, kinds and attributes follow the OpenTelemetry GenAI
semantic conventions (open-telemetry/semantic-conventions-genai):

- model/gen-ai/spans.yaml: `invoke_workflow {gen_ai.workflow.name}` (INTERNAL),
  `invoke_agent {gen_ai.agent.name}` (INTERNAL), `chat {gen_ai.request.model}` (CLIENT for a model
  in another process; `gen_ai.provider.name` required, `openai` per docs/gen-ai/openai.md),
  `gen_ai.conversation.id` where the framework has one (flotilla: the run id).
- docs/gen-ai/gen-ai-guardrails.md: one `gen_ai.guardrail.result` event per rail decision.
- model/gen-ai/events.yaml: `gen_ai.evaluation.result` with `gen_ai.evaluation.name` (required),
  `gen_ai.evaluation.score.value` / `.score.label`, parented to the operation it evaluated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as OtlpSpan

from flotilla.agents.models.openai_compat import OpenAICompatibleClient
from flotilla.agents.models.registry import ModelEndpoint, ModelRegistry
from flotilla.audit.runs import RunStore
from flotilla.audit.sanitize import Sanitizer
from flotilla.audit.setup import audit_exporters
from flotilla.audit.store import AuditStore
from flotilla.audit.telemetry import Telemetry
from flotilla.audit.tree import build_view
from flotilla.graphs import WorkflowRunner, load_workflow
from flotilla.guardrails import Guardrails
from tests.audit.otlp_receiver import OtlpReceiver, attrs_of
from tests.support.scripted_openai import Reply, ScriptedOpenAI, by_schema
from tests.support.servers import serve_app
from tests.support.triage import TRIAGE_ANSWERS
from tests.support.triage import FOUR_AGENT_TRIAGE

SAMPLE = (Path(__file__).resolve().parents[2] / "graphs" / "samples" / "invoice.txt").read_text()
ALIASES = ("specialist-extract", "specialist-analyze", "specialist-decide", "specialist-write")
# Only the microsecond YARA rules: the conventions are the point here, not the engines.
LIGHT_RAILS = {"presidio": {"enabled": False}, "injection_classifier": {"enabled": False}, "content_safety": {"enabled": False},
               "tool_screen": {"enabled": False}}


def _events(span: Any, name: str) -> list[dict[str, Any]]:
    return [attrs_of(e) for e in span.events if e.name == name]


@pytest.fixture
async def traced_run(tmp_path: Path, sqlite_store: AuditStore, monkeypatch: pytest.MonkeyPatch):
    # The first reply is not JSON: the extract step's schema check fails once, then its repair passes.
    server = ScriptedOpenAI(script=[Reply("not json at all")], default=by_schema(TRIAGE_ANSWERS))
    with serve_app(server.app()) as url, OtlpReceiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        telemetry = Telemetry(audit_exporters(sqlite_store, Sanitizer("off")))  # the production wiring
        registry = ModelRegistry(
            {a: ModelEndpoint(provider="openai-compatible", base_url=f"{url}/v1", model=a, max_retries=0) for a in ALIASES},
            embedded=lambda: pytest.fail("every alias has an endpoint; nothing may fall back to the embedded model"),
            http_client=lambda e, key: OpenAICompatibleClient(base_url=e.base_url, model=e.model, local=e.local, max_retries=0),
        )
        runner = WorkflowRunner(
            registry=registry, telemetry=telemetry, runs=RunStore(f"sqlite:///{tmp_path / 'runs.sqlite'}"),
            checkpoint_path=tmp_path / "checkpoints.sqlite", max_input_bytes=100_000, rails=Guardrails(LIGHT_RAILS),
        )
        try:
            result = await runner.run(load_workflow(FOUR_AGENT_TRIAGE), SAMPLE, initiator="test")
        finally:
            await runner.aclose()
            telemetry.shutdown()  # flushes the batched OTLP and audit exporters
        yield result, receiver.spans()


async def test_spans_follow_the_genai_conventions(traced_run) -> None:
    result, spans = traced_run
    assert result.status == "succeeded", result.error
    by_name: dict[str, list[Any]] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)

    (workflow,) = by_name["invoke_workflow document_triage"]
    wf = attrs_of(workflow)
    assert workflow.kind == OtlpSpan.SPAN_KIND_INTERNAL
    assert wf["gen_ai.operation.name"] == "invoke_workflow" and wf["gen_ai.workflow.name"] == "document_triage"
    assert wf["gen_ai.conversation.id"] == result.run_id

    for agent in ("extract", "analyze", "decide", "write"):
        (step,) = by_name[f"invoke_agent {agent}"]
        attrs = attrs_of(step)
        assert step.kind == OtlpSpan.SPAN_KIND_INTERNAL and step.parent_span_id == workflow.span_id
        assert attrs["gen_ai.operation.name"] == "invoke_agent" and attrs["gen_ai.agent.name"] == agent
        assert attrs["gen_ai.provider.name"] == "openai" and attrs["gen_ai.request.model"] == f"specialist-{agent}"
        assert attrs["gen_ai.conversation.id"] == result.run_id

    chats = [s for s in spans if s.name.startswith("chat ")]
    assert len(chats) == 5  # four steps, one of them repaired once
    for chat in chats:
        attrs = attrs_of(chat)
        assert chat.kind == OtlpSpan.SPAN_KIND_CLIENT  # the model runs in another process, over HTTP
        assert chat.name == f"chat {attrs['gen_ai.request.model']}" and attrs["gen_ai.operation.name"] == "chat"
        assert attrs["gen_ai.provider.name"] == "openai" and attrs["gen_ai.conversation.id"] == result.run_id
        assert attrs["gen_ai.usage.input_tokens"] == 11 and "gen_ai.system" not in attrs  # the deprecated name is gone

    # Schema validation is an evaluation of the chat call it judged: fail, then pass after the repair.
    extract_chats = [attrs_of(c) for c in by_name["chat specialist-extract"]]
    assert len(extract_chats) == 2
    verdicts = [_events(c, "gen_ai.evaluation.result") for c in by_name["chat specialist-extract"]]
    assert [[(e["gen_ai.evaluation.name"], e["gen_ai.evaluation.score.label"], e["gen_ai.evaluation.score.value"]) for e in v] for v in verdicts] == [
        [("output_schema", "fail", 0.0)],
        [("output_schema", "pass", 1.0)],
    ]
    # The content policy is `off`: the explanation (it can quote the model's reply) does not leave.
    assert all("gen_ai.evaluation.explanation" not in e for v in verdicts for e in v)
    # Grounding the extracted invoice in the document, and each verification check, is an
    # evaluation of the extract step.
    step_verdicts = {e["gen_ai.evaluation.name"]: e for e in _events(by_name["invoke_agent extract"][0], "gen_ai.evaluation.result")}
    assert step_verdicts["ground_invoice"]["gen_ai.evaluation.score.label"] in ("pass", "fail")
    assert step_verdicts["verify.degenerate_text"]["gen_ai.evaluation.score.label"] == "pass"

    # Rail decisions: the guardrail result event, with the spec's names.
    (input_rail,) = [e for e in _events(workflow, "gen_ai.guardrail.result") if e["gen_ai.guardrail.component.name"] == "yara" and e["gen_ai.guardrail.source"] == "input"]
    assert input_rail["gen_ai.guardrail.result.type"] == "verdict" and input_rail["gen_ai.guardrail.result.value"] == "allow"
    assert input_rail["gen_ai.guardrail.policy.rule.id"] == "none" and "gen_ai.guardrail.risk.category" not in input_rail
    step_rails = _events(by_name["invoke_agent decide"][0], "gen_ai.guardrail.result")
    assert {e["gen_ai.guardrail.source"] for e in step_rails} == {"agent-output"}
    assert not [s for s in spans if any(e.name == "flotilla.rail" for e in s.events)]  # no pre-spec event names


async def test_the_audit_trail_reads_the_spec_names(traced_run, sqlite_store: AuditStore) -> None:
    result, _ = traced_run
    summary = sqlite_store.run_summary(result.run_id)
    assert sorted(summary["agents"]) == ["analyze", "decide", "extract", "write"]
    assert sorted(summary["models"]) == sorted(ALIASES) and summary["verdict"] == "allow" and summary["rail_checks"] > 0
    view = build_view(result.run_id, sqlite_store.run_records(result.run_id))
    # Engines configured off cost nothing and write nothing (`flotilla validate` reports them): only YARA's records.
    assert {r["engine"] for r in view.rail_rows} == {"yara"} and all(r["enabled"] for r in view.rail_rows)
    assert {r["verdict"] for r in view.rail_rows} == {"allow"}
    rail_records = [r.payload for r in sqlite_store.run_records(result.run_id) if r.kind == "rail"]
    assert rail_records and {r["gen_ai.guardrail.component.name"] for r in rail_records} == {"yara"}
    extract = next(n for n in view.nodes if n.name == "invoke_agent extract")
    assert [e["name"] for e in extract.evaluations] == ["ground_invoice", "verify.degenerate_text"]
    assert [n.span["kind"] for n in view.nodes if n.operation == "chat"] == ["CLIENT"] * 5


def test_records_written_before_the_spec_names_still_read(sqlite_store: AuditStore) -> None:
    """An audit store keeps what older versions wrote (`flotilla.rail` events): views still show it."""
    from flotilla.audit.exporter import AuditSpanExporter
    from tests.audit.factory import sync_telemetry

    telemetry = sync_telemetry([AuditSpanExporter(sqlite_store)])
    legacy = {"flotilla.rail.engine": "yara", "flotilla.rail.rule": "sqli", "flotilla.rail.point": "input",
              "flotilla.rail.verdict": "block", "flotilla.rail.latency_ms": 0.2}
    with telemetry.tracer.start_as_current_span("invoke_workflow old", attributes={"gen_ai.operation.name": "invoke_workflow", "flotilla.run_id": "old"}) as span:
        span.add_event("flotilla.rail", legacy)
    telemetry.shutdown()
    assert sqlite_store.run_summary("old")["verdict"] == "block"
    view = build_view("old", sqlite_store.run_records("old"))
    assert [(r["engine"], r["rule"], r["point"], r["verdict"]) for r in view.rail_rows] == [("yara", "sqli", "input", "block")]
    assert view.nodes[0].verdict == "block"
