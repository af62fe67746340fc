"""Per-field scorers of `flotilla eval`, the scorers file, report figures and gates."""

from __future__ import annotations

from pathlib import Path

import pytest

from flotilla.audit.errors import ConfigError
from flotilla.graphs.evaluation.report import failed_gates, parse_gates, summarise
from flotilla.graphs.evaluation.scorers import default_scorer, load_scorers, make_scorer


def score(spec, expected, actual) -> float:
    return make_scorer(spec, "test")(expected, actual)


def test_exact_text_and_enum() -> None:
    assert score("exact", "INV-1", "INV-1") == 1.0 and score("exact", "INV-1", "inv-1") == 0.0
    assert score("text", "Northwind Office Supplies Ltd.", "  northwind office  supplies LTD") == 1.0
    assert score("text", "Zürich AG", "ZÜRICH AG") == 1.0 and score("text", "Northwind", "Southwind") == 0.0
    assert score("enum", "approve", "Approve ") == 1.0 and score("enum", "approve", "hold") == 0.0
    assert score("text", None, None) == 1.0 and score("text", "x", None) == 0.0


def test_numeric_tolerance_absolute_and_relative() -> None:
    assert score({"numeric": {"tolerance": 0.01}}, 2734.8, 2734.805) == 1.0
    assert score({"numeric": {"tolerance": 0.01}}, 2734.8, 2734.9) == 0.0
    assert score({"numeric": {"tolerance": 0.01, "relative": True}}, 1000, 1009) == 1.0
    assert score({"numeric": {"tolerance": 0.01, "relative": True}}, 1000, 1011) == 0.0
    assert score("numeric", 12.5, "12.50") == 1.0 and score("numeric", 12.5, "twelve") == 0.0
    assert score("numeric", None, None) == 1.0 and score("numeric", 1.0, None) == 0.0


def test_f1_over_keyed_items() -> None:
    want = [{"description": "Paper", "amount": 980.0}, {"description": "Toner", "amount": 732.0}]
    got = [{"description": "paper", "quantity": 40, "amount": 980}, {"description": "Chair", "amount": 567.0}]
    assert score({"f1": {"key": ["description", "amount"]}}, want, got) == pytest.approx(0.5)
    assert score({"f1": {"key": ["description", "amount"]}}, want, list(reversed(want))) == 1.0
    assert score("f1", ["a", "b", "c"], ["a", "b"]) == pytest.approx(0.8)
    assert score("f1", [], []) == 1.0 and score("f1", ["a"], None) == 0.0


def test_custom_scorer_by_python_path() -> None:
    assert score("tests.test_eval_scorers:half_credit", 1, 2) == 0.5
    assert score({"custom": "tests.test_eval_scorers:half_credit"}, 1, 1) == 1.0
    with pytest.raises(ConfigError, match="does not resolve"):
        make_scorer("tests.test_eval_scorers:nope", "f")


def half_credit(expected, actual) -> float:
    return 1.0 if expected == actual else 0.5


def test_defaults_follow_the_json_type() -> None:
    assert default_scorer("x").kind == "text" and default_scorer(2.5).kind == "numeric"
    assert default_scorer([1]).kind == "f1" and default_scorer(True).kind == "exact" and default_scorer(None).kind == "exact"


def test_scorers_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "scorers.yaml"
    path.write_text("fields:\n  extract.total: {numeric: {tolerance: 0.01}}\n  extract.vendor: fuzzy\n")
    with pytest.raises(ConfigError, match=r"scorers.yaml: extract.vendor: unknown scorer 'fuzzy'"):
        load_scorers(path)
    path.write_text("fields:\n  total: exact\n")
    with pytest.raises(ConfigError, match="must be written `agent.field`"):
        load_scorers(path)
    path.write_text("fields:\n  extract.total: {numeric: {tolerence: 1}}\n")
    with pytest.raises(ConfigError, match="bad options for 'numeric'"):
        load_scorers(path)
    assert load_scorers(tmp_path / "absent.yaml").by_field == {}


def _record(case: str, scores: dict, *, status="succeeded", latency=100.0, escalated=False, cost=0.0) -> dict:
    return {
        "case_id": case, "scores": scores, "status": status, "latency_ms": latency, "escalated": escalated, "cost_usd": cost,
        "model_steps": 1, "first_try_valid": 1, "first_tier_verified": 0 if escalated else 1, "input_tokens": 10, "output_tokens": 5,
    }


def test_summary_figures_and_gates() -> None:
    records = [
        _record("a", {"extract.total": 1.0, "decide.decision": 1.0}, latency=100, cost=0.002),
        _record("b", {"extract.total": 0.0, "decide.decision": 1.0}, latency=300, escalated=True, cost=0.002),
        _record("c", {"extract.total": 1.0}, status="needs_review", latency=200, cost=0.002),
    ]
    figures = summarise(records)
    assert figures["accuracy"] == 0.8 and figures["fields"]["extract.total"] == pytest.approx(0.6667, abs=1e-4)
    assert figures["escalation_rate"] == pytest.approx(0.3333, abs=1e-4) and figures["needs_review_rate"] == pytest.approx(0.3333, abs=1e-4)
    assert figures["p50_ms"] == 200 and figures["p99_ms"] == 300 and figures["tokens"] == 45
    assert figures["quality_per_dollar"] == pytest.approx(0.8 / 0.002)
    report = {"summary": {"cfg": figures}}
    assert failed_gates(report, parse_gates(["accuracy=0.8", "p99_ms<=300", "extract.total>=0.6"])) == []
    assert failed_gates(report, parse_gates(["accuracy=0.9"])) == ["cfg: accuracy is 0.8, the gate is >= 0.9"]
    with pytest.raises(ConfigError, match="give METRIC=NUMBER"):
        parse_gates(["accuracy"])
