"""Workflow files: loading, and every validation error named with file, line and fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from flotilla.graphs import check_spec, list_workflows, load_workflow
from flotilla.graphs.spec import SpecError, parse_spec
from flotilla.runtime.cli import EXIT_INVALID, app

ALIASES = {"embedded", "specialist-extract"}
PROMPTS = Path(__file__).resolve().parents[2] / "agents" / "document_triage"

GOOD = f"""\
name: tiny
agents:
  extract:
    role: reads
    instructions: {PROMPTS / 'extract.md'}
    output_schema: flotilla.agents.document_triage.schemas:Invoice
    model: specialist-extract
  decide:
    role: decides
    instructions: {PROMPTS / 'decide.md'}
    output_schema: flotilla.agents.document_triage.schemas:Decision
edges:
  - {{from: extract, to: decide}}
"""


def problems_of(text: str, tmp_path: Path) -> list[str]:
    path = tmp_path / "wf.yaml"
    path.write_text(text)
    try:
        spec = load_workflow(path)
    except SpecError as exc:
        return [str(p) for p in exc.problems]
    return [str(p) for p in check_spec(spec, ALIASES)]


def test_builtin_workflows_are_valid() -> None:
    assert "document_triage" in list_workflows()
    spec = load_workflow("document_triage")
    assert check_spec(spec, {"embedded", "specialist-extract", "specialist-analyze", "specialist-decide", "specialist-write"}) == []
    assert list(spec.agents) == ["extract", "vendor", "purchase_order", "prior_invoices", "analyze", "decide", "write"]
    assert [a.kind for a in spec.agents.values()] == ["model", "tool", "tool", "tool", "function", "function", "function"]
    assert len(spec.version()) == 12


def test_good_spec_has_no_problems(tmp_path: Path) -> None:
    assert problems_of(GOOD, tmp_path) == []


def test_version_changes_with_prompt_content(tmp_path: Path) -> None:
    prompt = tmp_path / "p.md"
    prompt.write_text("one")
    text = GOOD.replace(str(PROMPTS / "decide.md"), str(prompt))
    before = parse_spec(text, tmp_path / "wf.yaml").version()
    prompt.write_text("two")
    assert parse_spec(text, tmp_path / "wf.yaml").version() != before


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    [problem] = problems_of("name: x\nagents:\n  a: [unclosed\n", tmp_path)
    assert "wf.yaml:4" in problem and "malformed YAML" in problem


def test_field_error_names_the_line(tmp_path: Path) -> None:
    text = GOOD.replace("    model: specialist-extract\n", "    model: specialist-extract\n    timeout_s: -1\n")
    [problem] = problems_of(text, tmp_path)
    assert "wf.yaml:8" in problem and "agents.extract.timeout_s" in problem and "greater than 0" in problem


def test_unknown_agent_in_edge(tmp_path: Path) -> None:
    [problem] = problems_of(GOOD.replace("to: decide", "to: decdie"), tmp_path)
    assert "wf.yaml:13" in problem and "unknown agent 'decdie'" in problem and "decide" in problem


def test_missing_instructions_file(tmp_path: Path) -> None:
    [problem] = problems_of(GOOD.replace(str(PROMPTS / "decide.md"), "nowhere.md"), tmp_path)
    assert "wf.yaml:10" in problem and "instructions file 'nowhere.md' not found" in problem


def test_unreachable_agent(tmp_path: Path) -> None:
    text = GOOD.replace("edges:\n  - {from: extract, to: decide}\n", "edges: []\n")
    [problem] = problems_of(text, tmp_path)
    assert "wf.yaml:8" in problem and "'decide' is unreachable" in problem


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("flotilla.agents.document_triage.schemas:Nope", "has no attribute 'Nope'"),
        ("no_such_module:Model", "cannot import module 'no_such_module'"),
        ("flotilla.agents.document_triage.rules:invoice_checks", "is not a pydantic model class"),
        ("schema.json", "does not exist"),
    ],
)
def test_schema_that_does_not_resolve(tmp_path: Path, ref: str, expected: str) -> None:
    [problem] = problems_of(GOOD.replace("flotilla.agents.document_triage.schemas:Decision", ref), tmp_path)
    assert "wf.yaml:11" in problem and "output_schema does not resolve" in problem and expected in problem


def test_json_schema_file_resolves(tmp_path: Path) -> None:
    (tmp_path / "schema.json").write_text('{"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}')
    assert problems_of(GOOD.replace("flotilla.agents.document_triage.schemas:Decision", "schema.json"), tmp_path) == []


def test_unknown_model_alias(tmp_path: Path) -> None:
    [problem] = problems_of(GOOD.replace("model: specialist-extract", "model: gpt-nine"), tmp_path)
    assert "wf.yaml:7" in problem and "unknown model alias 'gpt-nine'" in problem and "flotilla.yaml" in problem


def test_edge_needs_exactly_one_kind(tmp_path: Path) -> None:
    [problem] = problems_of(GOOD.replace("{from: extract, to: decide}", "{from: extract}"), tmp_path)
    assert "wf.yaml:13" in problem and "exactly one of `to`" in problem


def test_cli_validate_reports_and_exits_nonzero(tmp_path: Path) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text(GOOD.replace("to: decide", "to: decdie"))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == EXIT_INVALID
    assert f"{path}:13" in result.output and "unknown agent 'decdie'" in result.output
    assert "Traceback" not in result.output


def test_cli_validate_ok() -> None:
    result = CliRunner().invoke(app, ["validate", "document_triage"])
    assert result.exit_code == 0, result.output
    assert "ok document_triage: 7 agents" in result.output
    assert "rail injection-classifier on at input" in result.output
    assert "rail llama-guard disabled: no Llama Guard weights" in result.output  # no weights: reported, never silently "safe"
