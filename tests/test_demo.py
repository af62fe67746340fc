"""The main job end to end, as `make demo` runs it: the built-in document workflow on the
real embedded model, through the CLI, with the default rails and the bundled ledger server.

A run either gives an answer a person would accept — the right fields, a decision whose
reasons are sentences — or ends `needs_review` naming the check that failed. Never repeated
fragments in a `succeeded` run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flotilla.agents.degenerate import degenerate_reason, string_fields
from flotilla.agents.document_triage.schemas import Analysis, Decision, Invoice, Note

ROOT = Path(__file__).resolve().parents[1]
HELDOUT = {c["id"]: c for c in yaml.safe_load((ROOT / "tests" / "data" / "heldout_invoices.yaml").read_text())["invoices"]}
pytestmark = pytest.mark.model


def run_demo(tmp_path: Path, input_text: str) -> tuple[int, dict]:
    (tmp_path / "input.txt").write_text(input_text)
    env = {**os.environ, "FLOTILLA_DATA_DIR": str(tmp_path / "data"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "flotilla.runtime", "run", "document_triage", "--input", str(tmp_path / "input.txt"), "--json"],
        capture_output=True, env=env, cwd=ROOT, timeout=1500,
    )
    assert proc.stdout, proc.stderr.decode()[-3000:]
    return proc.returncode, json.loads(proc.stdout)


def assert_honest(code: int, result: dict) -> None:
    """Succeeded with no degenerate text and reasons that are sentences, or needs_review saying why."""
    if result["status"] == "needs_review":
        assert code == 4 and result["error"]["reasons"], result["error"]
        assert all(r["step"] and r["reason"] for r in result["error"]["reasons"])
        return
    assert code == 0 and result["status"] == "succeeded", result["error"]
    degenerate = [(s["agent"], path) for s in result["steps"] for path, text in string_fields(s["output"]) if degenerate_reason(text)]
    assert degenerate == []
    for reason in next(s for s in result["steps"] if s["agent"] == "decide")["output"]["reasons"]:
        assert reason[0].isupper() and reason.endswith(".") and len(reason.split()) >= 4, reason


def test_demo_invoice_is_read_checked_and_decided_right(tmp_path: Path) -> None:
    code, result = run_demo(tmp_path, (ROOT / "graphs" / "samples" / "invoice.txt").read_text())
    assert_honest(code, result)
    steps = {s["agent"]: s for s in result["steps"]}
    assert list(steps) == ["extract", "vendor", "purchase_order", "prior_invoices", "analyze", "decide", "write"]
    assert steps["extract"]["model"] == "SmolLM2-135M-Instruct" and steps["extract"]["output_tokens"] > 0
    assert all(steps[name]["model"] is None and steps[name]["produced_by"] for name in list(steps)[1:])
    invoice = Invoice.model_validate(steps["extract"]["output"])
    assert (invoice.vendor, invoice.invoice_number, invoice.purchase_order) == ("Northwind Office Supplies Ltd.", "INV-2026-0412", "PO-7781")
    assert (invoice.invoice_date, invoice.due_date) == ("2026-11-02", "2026-12-02")
    assert (invoice.subtotal, invoice.tax, invoice.total) == (2279.0, 455.8, 2734.8)
    Analysis.model_validate(steps["analyze"]["output"])
    assert Decision.model_validate(steps["decide"]["output"]).decision == "approve"
    note = Note.model_validate(result["output"])
    assert "INV-2026-0412" in note.body and "approved" in note.body


@pytest.mark.parametrize("case", ["fabrikam-valves", "contoso-cleaning-bad-total"])
def test_held_out_invoices_are_decided_right_or_sent_for_review(tmp_path: Path, case: str) -> None:
    expected = HELDOUT[case]["expected"]
    code, result = run_demo(tmp_path, HELDOUT[case]["text"])
    assert_honest(code, result)
    if result["status"] == "succeeded":
        decided = next(s for s in result["steps"] if s["agent"] == "decide")["output"]["decision"]
        assert decided == expected["decision"]


def test_a_document_that_is_not_an_invoice_finishes_on_hold(tmp_path: Path) -> None:
    minutes = (
        "Minutes of the facilities meeting, 3 November 2026. Present: A. Patel, J. Moreau.\n"
        "The team agreed to repaint the second-floor kitchen in December and to move the printer\n"
        "next to the stairs. Next meeting on 1 December.\n"
    )
    code, result = run_demo(tmp_path, minutes)
    assert_honest(code, result)
    if result["status"] == "succeeded":
        decide = next(s for s in result["steps"] if s["agent"] == "decide")["output"]
        assert decide["decision"] == "hold" and decide["reasons"]
