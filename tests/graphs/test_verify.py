"""Verification of every answer: the built-in checks on real degenerate output of the embedded
model, declarative grounding, confidence, `verify:` expressions and callables, and how
`flotilla validate` reports a check that cannot work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flotilla.agents.document_triage import schemas
from flotilla.agents.expressions import Expression, ExpressionError
from flotilla.agents.verify import Confidence, DegenerateText, Grounded, Verifier
from flotilla.graphs import load_workflow
from flotilla.graphs.build import check_spec
from flotilla.graphs.spec import SpecError

from .conftest import TRIAGE_ANSWERS
from .tiers import GOOD, TierHarness, model, write_workflow

REAL = json.loads((Path(__file__).parent / "fixtures" / "smollm2_outputs.json").read_text())["runs"]
SCHEMAS = {"extract": schemas.Invoice, "analyze": schemas.Analysis, "decide": schemas.Decision, "write": schemas.Note}
ISSUE = ["fields_coup_de_ca_de_fie_de_fie_de_fie", "fie_de_fie_de_fie_de_fie"]  # quoted in issue 11
ORDINARY = [
    "Northwind Office Supplies Ltd.",
    "The line items add up to the subtotal of 2279.00 and the total matches.",
    "Payment is due on 2026-12-02, which is 30 days after the invoice date.",
    "Dear requester, invoice INV-2026-0412 from Northwind Office Supplies Ltd. for GBP 2,734.80 is approved.",
    "A4 copier paper, 80 gsm (box of 5)",
    "Mississippi river barges, 3 units",
    "------------------------------",
    "Net 30 net 30 net 30 payment terms apply",
]


def failed(verifier: Verifier, output: dict, state: dict | None = None) -> dict[str, str]:
    return {v.check: v.message for v in verifier.verify(output, state or {}) if not v.passed}


def test_degenerate_text_catches_every_degenerate_output_the_embedded_model_gave() -> None:
    caught = 0
    for run in REAL[:2]:  # the two full runs
        for agent in ("analyze", "decide"):  # every one of these was degenerate, and `succeeded`
            problems = failed(Verifier.defaults(SCHEMAS[agent].model_json_schema()), run["steps"][agent])
            assert "degenerate_text" in problems, (run["input"], agent)
            caught += 1
    bundled = REAL[0]["steps"]["write"]
    assert failed(Verifier.defaults({}), bundled)["degenerate_text"].startswith("subject repeats a 7-character fragment")
    assert caught == 4


def test_degenerate_text_names_sizes_not_the_text() -> None:
    [why] = failed(Verifier((DegenerateText(),)), {"reasons": [REAL[0]["steps"]["decide"]["reasons"][0]]}).values()
    assert why == "reasons.0 repeats a 7-character fragment 11 times (77 of 80 characters)" and "fie" not in why
    assert "repeats an item (2 duplicate(s) of 3)" in failed(Verifier((DegenerateText(),)), REAL[1]["steps"]["decide"])["degenerate_text"]


@pytest.mark.parametrize("text", ISSUE)
def test_the_fragments_quoted_in_the_issue_are_degenerate(text: str) -> None:
    assert "degenerate_text" in failed(Verifier((DegenerateText(),)), {"finding": text})


def test_ordinary_text_and_real_extractions_pass() -> None:
    check = Verifier((DegenerateText(),))
    for text in ORDINARY:
        assert failed(check, {"text": text}) == {}, text
    for run in REAL:
        assert failed(check, run["steps"]["extract"]) == {}
    for answer in TRIAGE_ANSWERS.values():
        assert failed(check, answer) == {}


def test_grounded_values_must_be_in_the_input_and_nulls_pass() -> None:
    state = {"input": "Northwind Office Supplies Ltd.\nInvoice number: INV-2026-0412\nInvoice date: 2026-11-02\nA4 paper 980.00\nTotal due 2734.80"}
    check = Verifier((Grounded(("vendor", "invoice_number", "invoice_date", "total", "line_items.amount")),))
    right = {"vendor": "Northwind Office Supplies Ltd.", "invoice_number": "INV-2026-0412", "invoice_date": "2026-11-02", "total": 2734.8, "line_items": [{"amount": 980.0}]}
    assert failed(check, right, state) == {}
    assert failed(check, {**right, "vendor": None, "line_items": []}, state) == {}
    wrong = {**right, "invoice_number": "Bh-7781", "total": 2279.0, "invoice_date": "2026-12-02", "line_items": [{"amount": 732.0}]}
    assert failed(check, wrong, state) == {"grounded": "not found in the input: invoice_number, invoice_date, total, line_items.amount"}


def test_confidence_is_checked_by_default_where_the_schema_has_it() -> None:
    decision = Verifier.defaults(schemas.Decision.model_json_schema())
    assert [c.name for c in decision.checks] == ["degenerate_text", "confidence"]
    assert failed(decision, {**GOOD, "confidence": 0.3}) == {"confidence": "the model's confidence 0.3 is below 0.5"}
    stricter = Verifier.defaults(schemas.Decision.model_json_schema(), Confidence(0.95))
    assert [c.name for c in stricter.checks] == ["degenerate_text", "confidence"]  # declared replaces the default
    assert "confidence" in failed(stricter, GOOD)
    assert [c.name for c in Verifier.defaults(schemas.Note.model_json_schema()).checks] == ["degenerate_text"]


def test_expressions_over_fields_lists_and_helpers() -> None:
    invoice = {"line_items": [{"amount": 980.0}, {"amount": 732.0}, {"amount": 567.0}], "subtotal": 2279.0, "tax": 455.8, "total": 2734.8}
    assert Expression.parse("sum(line_items.amount) == subtotal").evaluate(invoice) is True
    assert Expression.parse("approx(subtotal + tax, total)").evaluate(invoice) is True
    assert Expression.parse("approx(subtotal + tax, total + 1)").evaluate(invoice) is False
    assert Expression.parse("len(line_items) > 0 and max(line_items.amount) < total").evaluate(invoice) is True
    reasons = Expression.parse("len(reasons) > 0 and min(words(r) for r in reasons) >= 3")
    assert reasons.evaluate(GOOD) is True
    assert reasons.evaluate({"reasons": ["fie_de_fie_de_fie_de_fie"]}) is False
    with pytest.raises(ExpressionError, match="TypeError"):
        Expression.parse("subtotal + tax").evaluate({"subtotal": 1.0, "tax": None})


@pytest.mark.parametrize(
    ("source", "why"),
    [("sum(", "does not parse"), ("__import__('os')", "calls something other than"), ("reasons.__class__", "starting with _"), ("open('x')", "calls something other than")],
)
def test_expressions_refuse_what_they_may_not_do(source: str, why: str) -> None:
    with pytest.raises(ExpressionError, match=why):
        Expression.parse(source)


def _problems(tmp: Path, **agent) -> list[str]:
    path = write_workflow(tmp, **agent)
    return [str(p) for p in check_spec(load_workflow(str(path)), {"specialist", "frontier"})]


def test_validate_says_file_and_line_for_every_check_that_cannot_work(tmp_path: Path) -> None:
    verify = [
        {"name": "parses", "expr": "len(reasons) >", "message": "m"},
        {"name": "fields", "expr": "approx(sum(line_items.amount), subtotal)", "message": "m"},
        {"name": "imports", "call": "no_such_module:check", "message": "m"},
        {"grounded": ["vendor"]},
    ]
    problems = _problems(tmp_path, model=["specialist", "large", "frontier"], verify=verify)
    text = (tmp_path / "tiered.yaml").read_text().splitlines()
    by_line = {int(p.split(":")[1]): p for p in problems}
    assert all(p.startswith(f"{tmp_path / 'tiered.yaml'}:") for p in problems) and len(problems) == 6, problems
    assert any("does not parse" in p and "len(reasons) >" in text[line - 1] for line, p in by_line.items())
    assert sum("is not a field of the output schema" in p for p in problems) == 3  # line_items.amount, subtotal, vendor
    assert any("call does not resolve" in p and "no_such_module" in p for p in problems)
    [alias] = [p for p in problems if "unknown model alias 'large'" in p]
    assert text[int(alias.split(":")[1]) - 1].strip() == "- large"  # the list item itself


def test_a_check_without_a_message_or_of_two_kinds_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="needs a `name` and a `message`"):
        load_workflow(str(write_workflow(tmp_path, model="specialist", verify=[{"expr": "len(reasons) > 0"}])))
    with pytest.raises(SpecError, match="exactly one of"):
        load_workflow(str(write_workflow(tmp_path, model="specialist", verify=[{"grounded": ["reasons"], "confidence": 0.5}])))


def test_a_good_workflow_validates_clean(tmp_path: Path) -> None:
    verify = [{"name": "sentences", "expr": "min(words(r) for r in reasons) >= 3", "message": "m"}, {"confidence": 0.7}, {"grounded": ["reasons"]}]
    assert _problems(tmp_path, model=["specialist", "frontier"], verify=verify) == []


def sentences_only(output: dict, state: dict) -> bool | str:
    """A `call:` check, importable as tests.graphs.test_verify:sentences_only."""
    short = [r for r in output["reasons"] if len(r.split()) < 3]
    return f"{len(short)} reason(s) are not sentences" if short else True


async def test_verdicts_are_evaluation_events_and_in_the_step_record(tmp_path: Path) -> None:
    verify = [
        {"name": "reasons_are_sentences", "expr": "min(words(r) for r in reasons) >= 3", "message": "a reason is not a sentence"},
        {"name": "sentences_only", "call": "tests.graphs.test_verify:sentences_only", "message": "not sentences"},
    ]
    h = TierHarness(tmp_path, {"specialist": model(GOOD, "small")})
    try:
        result = await h.run(write_workflow(tmp_path, model="specialist", verify=verify))
        assert result.status == "succeeded", result.error
        [step] = result.steps
        assert step["tier"] == "specialist" and step["attempts"] == [{"model": "specialist", "ok": True, "reasons": []}]
        assert [(v["check"], v["passed"]) for v in step["verification"]] == [
            ("degenerate_text", True), ("confidence", True), ("reasons_are_sentences", True), ("sentences_only", True)
        ]
        [agent_span] = [s for s in h.spans() if s["name"] == "invoke_agent decide"]
        events = [e["attributes"] for e in agent_span["events"] if e["name"] == "gen_ai.evaluation.result"]
        assert {e["gen_ai.evaluation.name"]: e["gen_ai.evaluation.score.label"] for e in events} == {
            "verify.degenerate_text": "pass", "verify.confidence": "pass", "verify.reasons_are_sentences": "pass", "verify.sentences_only": "pass"
        }
    finally:
        await h.aclose()


async def test_a_failed_check_on_the_only_tier_is_needs_review_naming_the_check(tmp_path: Path) -> None:
    verify = [{"name": "sentences_only", "call": "tests.graphs.test_verify:sentences_only", "message": "not sentences"}]
    h = TierHarness(tmp_path, {"specialist": model({**GOOD, "reasons": ["PO missing"]}, "small")})
    try:
        result = await h.run(write_workflow(tmp_path, model="specialist", verify=verify))
        assert result.status == "needs_review" and result.output is None
        assert result.error["step"] == "decide"
        assert result.error["reasons"] == [{"step": "decide", "reason": "specialist: sentences_only: 1 reason(s) are not sentences"}]
        [agent_span] = [s for s in h.spans() if s["name"] == "invoke_agent decide"]
        [event] = [e["attributes"] for e in agent_span["events"] if e["attributes"].get("gen_ai.evaluation.name") == "verify.sentences_only"]
        assert event["gen_ai.evaluation.score.label"] == "fail" and event["gen_ai.evaluation.explanation"] == "1 reason(s) are not sentences"
    finally:
        await h.aclose()


async def test_the_builtin_workflow_sends_the_embedded_models_misread_vendor_to_review(harness) -> None:
    """The embedded model read a renamed copy of the sample's invoice number as its vendor (kept in
    the fixture). Grounding cannot see it (the text is in the document); the workflow's
    `vendor_is_a_name` check does, and the run ends needs_review instead of a note to "Bh-7781"."""
    sample = (Path(__file__).resolve().parents[2] / "graphs" / "samples" / "invoice.txt").read_text()
    renamed = sample.replace("Northwind Office Supplies", "Blue Harbor Catering").replace("INV-2026-0412", "BH-7781")
    misread = REAL[1]["steps"]["extract"]
    h = harness(model(misread, "SmolLM2-135M-Instruct"))
    result = await h.runner.run(load_workflow("document_triage"), renamed)
    assert result.status == "needs_review", result.output
    assert result.error["step"] == "extract"
    [reason] = result.error["reasons"]
    assert reason["reason"].startswith("specialist-extract: vendor_is_a_name: the vendor has no words in it")


async def test_a_required_field_grounding_removed_is_a_misread_not_a_missing_field(harness) -> None:
    """On an invoice it had never seen the embedded model named the vendor "Luxury"; grounding
    removed it and the run told the requester "the document shows no vendor". Now the
    workflow's `required_fields_read` check sends it to review."""
    unseen = REAL[2]
    result = await harness(model(unseen["steps"]["extract"], "SmolLM2-135M-Instruct")).runner.run(load_workflow("document_triage"), unseen["text"])
    assert result.status == "needs_review", result.output
    [reason] = result.error["reasons"]
    assert reason["reason"] == "specialist-extract: required_fields_read: the model's vendor is not in the document (removed by grounding): misread"
