"""The main job end to end, as `make demo` runs it: the built-in document workflow on the
real embedded model, through the CLI, with the default rails and the bundled ledger server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flotilla.agents.document_triage.schemas import Analysis, Decision, Invoice, Note

ROOT = Path(__file__).resolve().parents[1]
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


def test_demo_invoice_runs_every_agent_on_the_embedded_model(tmp_path: Path) -> None:
    code, result = run_demo(tmp_path, (ROOT / "graphs" / "samples" / "invoice.txt").read_text())
    assert code == 0 and result["status"] == "succeeded", result["error"]
    steps = {s["agent"]: s for s in result["steps"]}
    assert list(steps) == ["extract", "analyze", "decide", "write"]
    for step in steps.values():
        assert step["ok"] and step["model"] == "SmolLM2-135M-Instruct" and step["output_tokens"] > 0
    Invoice.model_validate(steps["extract"]["output"])
    Analysis.model_validate(steps["analyze"]["output"])
    Decision.model_validate(steps["decide"]["output"])
    Note.model_validate(result["output"])
    assert steps["extract"]["output"]["invoice_number"] == "INV-2026-0412"


def test_a_document_that_is_not_an_invoice_finishes_on_hold(tmp_path: Path) -> None:
    minutes = (
        "Minutes of the facilities meeting, 3 November 2026. Present: A. Patel, J. Moreau.\n"
        "The team agreed to repaint the second-floor kitchen in December and to move the printer\n"
        "next to the stairs. Next meeting on 1 December.\n"
    )
    code, result = run_demo(tmp_path, minutes)
    assert code == 0 and result["status"] == "succeeded", result["error"]
    decide = result["steps"][2]["output"]
    assert decide["decision"] == "hold" and decide["reasons"]
