"""The labelled invoice dataset (datasets/invoices) and its loader (flotilla.graphs.dataset)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from flotilla.agents.document_triage.schemas import Invoice
from flotilla.agents.document_triage.triage import analyze_invoice, decide_invoice
from flotilla.audit.errors import ConfigError
from flotilla.graphs.catalog import load_workflow
from flotilla.graphs.dataset import Case, DatasetError, load_cases
from flotilla.graphs.tool_node import resolve_arguments

ROOT = Path(__file__).resolve().parents[1]
DATASET = ROOT / "datasets" / "invoices"
SPLITS = ("train", "eval")


@pytest.fixture(scope="module")
def cases() -> dict[str, list[Case]]:
    return {split: load_cases(DATASET / f"{split}.jsonl") for split in SPLITS}


def test_the_shipped_splits_load_and_every_case_is_fully_labelled(cases: dict[str, list[Case]]) -> None:
    assert [len(cases[s]) for s in SPLITS] == [300, 150]
    for split in SPLITS:
        for case in cases[split]:
            assert case.id.startswith(f"inv-{split}-") and case.line >= 1
            # the whole Invoice, valid against the extract agent's own schema, and a decision
            assert Invoice.model_validate(case.expected["extract"]).model_dump(mode="json") == case.expected["extract"]
            assert case.fields()[-1] == "decide.decision"
        mix = Counter(c.expected["decide"]["decision"] for c in cases[split])
        assert set(mix) == {"approve", "hold", "reject"} and min(mix.values()) >= 0.2 * len(cases[split]), mix


def test_regenerating_gives_the_same_bytes(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(DATASET / "generate.py"), "--out", str(tmp_path)], check=True, capture_output=True, cwd=tmp_path)
    for split in SPLITS:
        assert (tmp_path / f"{split}.jsonl").read_bytes() == (DATASET / f"{split}.jsonl").read_bytes(), f"{split}.jsonl is stale: rerun generate.py"


def test_the_splits_share_no_case_and_eval_has_vendors_and_layouts_train_never_shows(cases: dict[str, list[Case]]) -> None:
    train, evaluation = cases["train"], cases["eval"]
    assert not {c.id for c in train} & {c.id for c in evaluation}
    assert not {c.input for c in train} & {c.input for c in evaluation}
    assert len({c.input for c in train + evaluation}) == len(train) + len(evaluation)
    train_layouts = {v for c in train for v in c.tag_values("layout")}
    unseen_layouts = {v for c in evaluation if "unseen:layout" in c.tags for v in c.tag_values("layout")}
    assert unseen_layouts and not unseen_layouts & train_layouts
    train_vendors = {c.expected["extract"]["vendor"] for c in train}
    unseen_vendors = {c.expected["extract"]["vendor"] for c in evaluation if "unseen:vendor" in c.tags}
    assert unseen_vendors and not unseen_vendors & train_vendors


def test_every_flaw_the_issue_names_occurs_in_both_splits(cases: dict[str, list[Case]]) -> None:
    for split in SPLITS:
        tags = Counter(t for c in cases[split] for t in c.tags)
        for tag in ("flaw:arithmetic_lines", "flaw:arithmetic_total", "flaw:duplicate", "flaw:blocked_vendor", "flaw:unknown_vendor",
                    "flaw:no_po", "flaw:no_due_date", "noise:ocr", "numbers:de", "lang:de", "currency:EUR", "currency:GBP"):
            assert tags[tag] > 0, f"{split} has no {tag}"


async def _policy_decisions(sample: list[Case]) -> list[str]:
    """The decision recomputed apart from the generator: the ledger server's own tools called
    in-process with the workflow's argument templates, then the workflow's analyze and decide."""
    import tempfile

    from flotilla.mcp_servers.ledger.db import build_database
    from flotilla.mcp_servers.ledger.server import build_server

    spec = load_workflow("document_triage")
    lookups = {name: agent for name, agent in spec.agents.items() if agent.tool}
    with tempfile.TemporaryDirectory() as tmp:
        server = build_server(build_database(Path(tmp) / "ledger.sqlite"))
        decisions = []
        for case in sample:
            state: dict[str, Any] = {"input": case.input, "outputs": {"extract": case.expected["extract"]}}
            for name, agent in lookups.items():
                try:
                    result = await server.call_tool(agent.tool.split(".", 1)[1], resolve_arguments(agent.arguments, state))
                    state["outputs"][name] = result.structured_content
                except Exception as exc:  # the server's ToolError: what the tool node keeps as evidence
                    state["outputs"][name] = {"error": {"code": "tool_error", "message": str(exc)}}
            state["outputs"]["analyze"] = analyze_invoice(state).model_dump(mode="json")
            decisions.append(decide_invoice(state).decision.value)
    return decisions


def test_expected_decisions_are_the_built_in_policys(cases: dict[str, list[Case]]) -> None:
    sample = cases["train"][::10] + cases["eval"][::5]
    assert {c.expected["decide"]["decision"] for c in sample} == {"approve", "hold", "reject"}
    assert asyncio.run(_policy_decisions(sample)) == [c.expected["decide"]["decision"] for c in sample]


@pytest.mark.parametrize(
    ("lines", "line", "message"),
    [
        ('{"id": "a", "input": "x"}\n{"id": "b", "input": ', 2, "line 2: not JSON"),
        ('[1, 2]', 1, "line 1: a case must be a JSON object, not list"),
        ('\n{"id": "a"}', 2, "line 2: missing 'input'"),
        ('{"id": "a", "input": "x", "expectd": {}}', 1, "line 1: unknown key 'expectd'"),
        ('{"id": "a", "input": "x", "expected": {"extract": 5}}', 1, "line 1: expected.extract: Input should be a valid dictionary"),
        ('{"id": "a", "input": "x", "expected": {"extract": {"total amount": 5}}}', 1, "'total amount' is not an agent or field name"),
        ('{"id": "a", "input": "x"}\n{"id": "a", "input": "y"}', 2, "line 2: id 'a' is already used on line 1"),
        ('{"id": "a", "input": ""}', 1, "line 1: input: String should have at least 1 character"),
    ],
)
def test_a_bad_line_is_named_with_its_file_and_number(tmp_path: Path, lines: str, line: int, message: str) -> None:
    path = tmp_path / "cases.jsonl"
    path.write_text(lines, encoding="utf-8")
    with pytest.raises(DatasetError) as caught:
        load_cases(path)
    assert caught.value.line == line and message in caught.value.message and str(path) in caught.value.message
    assert isinstance(caught.value, ConfigError)  # the CLI's exit code 2 and message, never a traceback


def test_a_missing_or_empty_file_is_a_dataset_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such dataset file"):
        load_cases(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="has no cases"):
        load_cases(tmp_path / "empty.jsonl")


def test_a_case_keeps_its_line_and_round_trips_to_the_same_json(tmp_path: Path) -> None:
    row = {"id": "c1", "input": "Invoice INV-1", "expected": {"extract": {"invoice_number": "INV-1", "total": None}}, "tags": ["layout:x", "lang:en"]}
    path = tmp_path / "cases.jsonl"
    path.write_text("\n" + json.dumps(row) + "\n", encoding="utf-8")
    [case] = load_cases(path)
    assert case.line == 2 and case.tag_values("layout") == ["x"] and case.fields() == ["extract.invoice_number", "extract.total"]
    assert case.model_dump(mode="json") == row
