"""flotilla's own error messages survive redaction; the user content they quote does not.

A model reply that is not valid JSON once read `reply: <PERSON>: EOF while parsing a string` in
the record — Presidio took "Invalid JSON" for a person's name. Errors now carry the reply they
are about apart from the message (`FlotillaError.quoted`): under the `redacted` policy the run
store and the audit store keep the message as written and redact only the quoted reply.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flotilla.agents.models.base import ChatRequest
from flotilla.agents.models.registry import ModelEndpoint, ModelRegistry
from flotilla.agents.models.testing import FunctionModel
from flotilla.agents.output import JsonSchemaOutput, OutputMismatch
from flotilla.audit.runs import RunStore
from flotilla.audit.sanitize import Sanitizer
from flotilla.audit.setup import audit_exporters, open_audit_store
from flotilla.audit.telemetry import Telemetry
from flotilla.graphs import WorkflowRunner, load_workflow
from tests.support.triage import TRIAGE_ANSWERS
from tests.support.triage import FOUR_AGENT_TRIAGE

INVOICE = (Path(__file__).resolve().parents[2] / "graphs" / "samples" / "invoice.txt").read_text()
ALIASES = ("specialist-extract", "specialist-analyze", "specialist-decide", "specialist-write")
EMAIL = "jane.doe@example.com"
# Cut off inside a string: "Invalid JSON: EOF while parsing a string".
UNFINISHED_JSON = '{"vendor": "Please call Jane Doe on ' + EMAIL + ' about the'
# Valid JSON, wrong type: pydantic's "Input should be a valid number".
WRONG_TYPE = json.dumps({**TRIAGE_ANSWERS["Invoice"], "total": f"ask Jane Doe ({EMAIL})"})


@pytest.fixture(scope="module")
def sanitizer() -> Sanitizer:
    from flotilla.guardrails.pii import PresidioRail

    rail = PresidioRail()
    return Sanitizer("redacted", redact=lambda text: rail.redact(text)[0])


class Stores:
    def __init__(self, tmp: Path, sanitizer: Sanitizer, extract_reply: str) -> None:
        def respond(request: ChatRequest) -> str:
            return extract_reply if request.schema_name == "Invoice" else json.dumps(TRIAGE_ANSWERS[request.schema_name])

        self.audit = open_audit_store(f"sqlite:///{tmp / 'audit.sqlite'}", sanitizer=sanitizer)
        self.telemetry = Telemetry(audit_exporters(self.audit, sanitizer, otlp=False))
        self.runs = RunStore(f"sqlite:///{tmp / 'runs.sqlite'}", audit=self.audit, sanitizer=sanitizer)
        self.runner = WorkflowRunner(
            registry=ModelRegistry({a: ModelEndpoint() for a in ALIASES}, embedded=lambda: FunctionModel(respond), http_client=None),
            telemetry=self.telemetry,
            runs=self.runs,
            checkpoint_path=tmp / "checkpoints.sqlite",
            max_input_bytes=100_000,
        )

    def audit_payloads(self, run_id: str) -> list[tuple[str, dict[str, Any]]]:
        self.telemetry.flush()
        return [(r.kind, r.payload) for r in self.audit.run_records(run_id)]


@pytest.fixture
async def stores(tmp_path: Path, sanitizer: Sanitizer):
    made: list[Stores] = []

    def make(extract_reply: str) -> Stores:
        made.append(Stores(tmp_path / str(len(made)), sanitizer, extract_reply))
        return made[-1]

    yield make
    for s in made:
        await s.runner.aclose()
        s.telemetry.shutdown()


def assert_kept_as_written(s: Stores, result: Any, expected: str) -> None:
    """The message is recorded verbatim everywhere; the quoted reply only with its PII redacted."""
    message = result.error["message"]
    assert expected in message and "<PERSON>" not in message
    assert EMAIL in result.error["quoted"]  # the caller gets its own result in full

    record = s.runs.get_run(result.run_id)
    assert record.error["message"] == message
    assert EMAIL not in record.error["quoted"] and "<EMAIL>" in record.error["quoted"]
    [failed] = [step for step in record.steps if step.get("error")]
    assert failed["error"]["message"] == message and EMAIL not in failed["error"]["quoted"]

    payloads = s.audit_payloads(result.run_id)
    [finished] = [p for kind, p in payloads if kind == "run" and p["event"] == "finished"]
    assert finished["error"]["message"] == message and "<EMAIL>" in finished["error"]["quoted"]
    [workflow_span] = [p for kind, p in payloads if kind == "span" and p["name"].startswith("invoke_workflow")]
    if result.status == "needs_review":  # not an error: the reasons are on the span, verbatim
        assert any(expected in reason for reason in workflow_span["attributes"]["flotilla.review.reasons"])
    else:
        assert workflow_span["status_message"] == message
    assert EMAIL not in json.dumps(payloads)  # nowhere in the trail, prompts and replies included


async def test_an_invalid_json_reply_keeps_its_error_message_and_redacts_the_reply(stores) -> None:
    s = stores(UNFINISHED_JSON)
    result = await s.runner.run(load_workflow(FOUR_AGENT_TRIAGE), INVOICE)
    # Invalid after the repair on its only tier: needs_review, the validation message kept.
    assert result.status == "needs_review" and result.error["code"] == "needs_review"
    assert_kept_as_written(s, result, "reply: Invalid JSON: EOF while parsing a string")


async def test_a_pydantic_validation_failure_keeps_its_message_and_redacts_the_value(stores) -> None:
    s = stores(WRONG_TYPE)
    result = await s.runner.run(load_workflow(FOUR_AGENT_TRIAGE), INVOICE)
    assert result.status == "needs_review" and result.error["code"] == "needs_review"
    assert "Jane Doe" not in result.error["message"] and EMAIL not in result.error["message"]
    assert_kept_as_written(s, result, "total: Input should be a valid number")


def test_json_schema_messages_name_the_rule_not_the_value() -> None:
    schema = JsonSchemaOutput({"type": "object", "properties": {"decision": {"enum": ["pay", "hold"]}}})
    with pytest.raises(OutputMismatch) as caught:
        schema.parse(json.dumps({"decision": f"ask {EMAIL}"}))
    assert str(caught.value) == "decision: the value is not one of ['pay', 'hold']"


@pytest.mark.parametrize(
    ("policy", "quoted"),
    [("off", None), ("full", f"reply from {EMAIL}"), ("redacted", None)],  # redacted without a redactor drops it
)
def test_an_error_record_follows_the_content_policy_only_in_what_it_quotes(policy: str, quoted: str | None) -> None:
    error = {"type": "AgentOutputInvalid", "code": "agent_output_invalid", "message": "reply: Invalid JSON", "quoted": f"reply from {EMAIL}"}
    kept = Sanitizer(policy).error(error)
    assert {k: kept[k] for k in ("type", "code", "message")} == {k: error[k] for k in ("type", "code", "message")}
    assert kept.get("quoted") == quoted
