"""Rails obey a confidential run's locality as agents do.

The NeMo rail's model alias points at a scripted OpenAI-compatible server marked `local: false`
(it records every request). A confidential run must make zero requests to it — refused (the run
is blocked, saying why) or rerouted to the local model — while a non-confidential run does use
it; and the audit trail records, for every rail decision, which model it used and whether it was
local. The specialists are instant local doubles: their answers are not under test.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flotilla.agents.models.base import ChatRequest
from flotilla.agents.models.openai_compat import OpenAICompatibleClient
from flotilla.agents.models.registry import ModelEndpoint, ModelRegistry
from flotilla.agents.models.testing import FunctionModel
from flotilla.audit.runs import RunStore
from flotilla.audit.sanitize import Sanitizer
from flotilla.audit.semconv import MODEL_LOCAL, is_rail_event, rail_fields
from flotilla.audit.setup import audit_exporters, open_audit_store
from flotilla.audit.telemetry import Telemetry
from flotilla.graphs import WorkflowRunner, load_workflow
from flotilla.graphs.spec import WorkflowSpec
from flotilla.guardrails import Guardrails
from tests.support.scripted_openai import Reply, ScriptedOpenAI
from tests.support.servers import serve_app
from tests.support.triage import TRIAGE_ANSWERS
from tests.support.triage import FOUR_AGENT_TRIAGE

INVOICE = (Path(__file__).resolve().parents[2] / "graphs" / "samples" / "invoice.txt").read_text()
ALIASES = ("specialist-extract", "specialist-analyze", "specialist-decide", "specialist-write")
# Only NeMo (and, where a test says so, Presidio): each verdict below is one engine's.
RAILS: dict[str, Any] = {
    "presidio": {"enabled": False},
    "yara": {"enabled": False},
    "injection_classifier": {"enabled": False},
    "content_safety": {"enabled": False},
    "tool_screen": {"enabled": False},
    "llama_guard": {"enabled": False},
    "nemo": {"enabled": True, "model": "guard-remote", "points": ["input", "output"], "domain": "invoice processing"},
}


def local_model(request: ChatRequest) -> str:
    """The specialists' canned answers; as NeMo's rerouted judge it never asks to block."""
    return json.dumps(TRIAGE_ANSWERS[request.schema_name]) if request.json_schema else "No"


@pytest.fixture(scope="module")
def remote_guard() -> Iterator[tuple[ScriptedOpenAI, str]]:
    scripted = ScriptedOpenAI(model="remote-guard", default=lambda body: Reply("No"))
    with serve_app(scripted.app()) as url:
        yield scripted, url


class Setup:
    def __init__(self, tmp: Path, url: str, rails: dict[str, Any]) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.audit = open_audit_store(f"sqlite:///{tmp / 'audit.sqlite'}")
        self.telemetry = Telemetry(audit_exporters(self.audit, Sanitizer("off"), otlp=False))
        endpoints = {a: ModelEndpoint() for a in ALIASES}
        endpoints["guard-remote"] = ModelEndpoint(
            provider="openai-compatible", base_url=f"{url}/v1", model="remote-guard", local=False, max_retries=0, timeout_s=30
        )
        self.registry = ModelRegistry(
            endpoints,
            embedded=lambda: FunctionModel(local_model, name="local-double"),
            http_client=lambda endpoint, key: OpenAICompatibleClient(
                base_url=endpoint.base_url, model=endpoint.model, local=endpoint.local, max_retries=0, timeout_s=endpoint.timeout_s
            ),
        )
        self.runner = WorkflowRunner(
            registry=self.registry,
            telemetry=self.telemetry,
            runs=RunStore(f"sqlite:///{tmp / 'runs.sqlite'}", audit=self.audit),
            checkpoint_path=tmp / "checkpoints.sqlite",
            max_input_bytes=100_000,
            rails=Guardrails(rails, model_resolver=lambda alias: self.registry.resolve(alias).client),
        )

    def rail_events(self, run_id: str) -> list[dict[str, Any]]:
        """Every rail decision of the run as the audit store recorded it: the decision's fields
        plus the locality attributes (`model_alias`, `model_local`, `rerouted`)."""
        self.telemetry.flush()
        return [
            {
                **rail_fields(event["attributes"]),
                "model_alias": event["attributes"].get("flotilla.model_alias"),
                "model_local": event["attributes"].get(MODEL_LOCAL),
                "rerouted": event["attributes"].get("flotilla.policy.rerouted", False),
                "model_calls": event["attributes"].get("flotilla.rail.model_calls"),
            }
            for record in self.audit.run_records(run_id)
            if record.kind == "span"
            for event in record.payload.get("events", [])
            if is_rail_event(event["name"])
        ]


@pytest.fixture
async def setup(tmp_path: Path, remote_guard):
    scripted, url = remote_guard
    made: list[Setup] = []

    def make(rails: dict[str, Any] = RAILS) -> Setup:
        scripted.requests.clear()
        made.append(Setup(tmp_path / str(len(made)), url, rails))
        return made[-1]

    yield make, scripted
    for s in made:
        await s.runner.aclose()
        s.telemetry.shutdown()


def triage(**settings: Any) -> WorkflowSpec:
    spec = load_workflow(FOUR_AGENT_TRIAGE)
    data = spec.model_dump(by_alias=True, exclude={"source", "lines"})
    data["settings"].update(settings)
    changed = WorkflowSpec.model_validate(data)
    changed.source = spec.source
    return changed


def nemo_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["engine"] == "nemo"]


async def test_a_non_confidential_run_uses_the_remote_rail_model_and_says_so(setup) -> None:
    make, remote = setup
    s = make()
    result = await s.runner.run(triage(), INVOICE)
    assert result.status == "succeeded", result.error
    assert len(remote.requests) == 2  # NeMo's self-check at input and at output
    events = nemo_events(s.rail_events(result.run_id))
    assert [e["point"] for e in events] == ["input", "output"]
    assert all(e["model_alias"] == "guard-remote" and e["model_local"] is False for e in events)


async def test_a_confidential_run_that_refuses_never_reaches_the_remote_rail_model(setup) -> None:
    make, remote = setup
    s = make()
    result = await s.runner.run(triage(on_remote="refuse"), INVOICE, confidential=True)
    assert remote.requests == []
    assert result.status == "blocked"
    assert result.error["engine"] == "nemo" and result.error["rule"] == "remote-model-refused" and result.error["point"] == "input"
    assert "'guard-remote'" in result.error["message"] and "confidential (run flag)" in result.error["message"]
    assert "sent nothing" in result.error["message"]
    assert result.steps == []  # blocked before any agent ran
    [event] = nemo_events(s.rail_events(result.run_id))
    assert event["verdict"] == "block" and event["model_local"] is False


async def test_a_confidential_run_with_fallback_runs_its_rails_on_the_local_model(setup) -> None:
    make, remote = setup
    s = make()
    result = await s.runner.run(triage(sensitivity="confidential", on_remote="fallback"), INVOICE)
    assert result.status == "succeeded", result.error
    assert remote.requests == []
    events = nemo_events(s.rail_events(result.run_id))
    assert [e["point"] for e in events] == ["input", "output"]
    assert all(e["model_local"] is True and e["rerouted"] is True for e in events)
    assert all(e["model_calls"] == 1 for e in events)  # the check ran, on the local model


async def test_pii_the_input_rail_finds_applies_before_the_next_rail_calls_a_model(setup) -> None:
    make, remote = setup
    s = make({**RAILS, "presidio": {"enabled": True, "points": ["input"], "entities": ["EMAIL_ADDRESS"]}})
    result = await s.runner.run(triage(), INVOICE + "\nQuestions: jane.doe@example.com\n")
    assert remote.requests == []  # the workflow is not confidential; the PII made the run so
    assert result.status == "blocked" and result.error["rule"] == "remote-model-refused"
    assert "input rail found PII" in result.error["message"]
    ran = [e["engine"] for e in s.rail_events(result.run_id) if e["enabled"]]
    assert ran == ["presidio", "nemo"]
