"""`flotilla eval` as a user runs it: a subprocess, configs as overlays pointing the specialists at
an OpenAI-compatible endpoint, the real runner (ledger MCP server, verification, tiers, audit)."""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from tests.eval_support import CASES, DATA, answer, communicate_or_explain, flotilla, scripted_server, write_configs
from tests.support.scripted_openai import Reply, schema_name
from tests.support.servers import serve_app


@pytest.fixture
def endpoint():
    server = scripted_server()
    with serve_app(server.app()) as url:
        yield server, url


def test_three_configs_side_by_side_then_a_rerun_runs_nothing(tmp_path: Path, endpoint) -> None:
    server, url = endpoint
    configs = write_configs(tmp_path, url)
    args = ["eval", "document_triage", "--dataset", str(CASES), *sum((["--config", str(p)] for p in configs.values()), []), "--out", "out"]
    proc = flotilla(tmp_path, *args, "--json")
    assert proc.returncode == 0, proc.stderr.decode()
    report = json.loads(proc.stdout)
    good, weak, cascade = (report["summary"][name] for name in ("good", "weak", "cascade"))
    assert [s["cases"] for s in (good, weak, cascade)] == [4, 4, 4]
    # inv-4 renames the invoice number: the label reader reads it off the document, not the model.
    assert good["accuracy"] == 1.0 and good["needs_review_rate"] == 0.0 and good["escalation_rate"] == 0.0
    assert good["fields"]["extract.line_items"] == 1.0  # F1 over (description, amount)
    assert good["schema_adherence"] == 1.0 and good["verification_pass_rate"] == 1.0
    # weak misreads the vendor with no tier left: schema-valid, but verification sends every run to review.
    assert weak["needs_review_rate"] == 1.0 and weak["accuracy"] == 0.0
    assert weak["schema_adherence"] == 1.0 and weak["verification_pass_rate"] == 0.0
    # cascade escalates every case to the frontier tier, which answers like good, at a higher price.
    assert cascade["escalation_rate"] == 1.0 and cascade["accuracy"] == 1.0 and cascade["verification_pass_rate"] == 0.0
    assert cascade["cost_usd"] > good["cost_usd"] > 0
    assert good["quality_per_dollar"] > cascade["quality_per_dollar"]
    assert 0 < good["p50_ms"] <= good["p99_ms"]
    diff = next(d for d in report["disagreements"] if d["case_id"] == "inv-1" and d["field"] == "extract.vendor")
    assert diff["answers"]["good"]["score"] == 1.0 and diff["answers"]["weak"]["score"] == 0.0
    assert diff["answers"]["weak"]["status"] == "needs_review"
    out = tmp_path / "out"
    assert len((out / "results.jsonl").read_text().splitlines()) == 12
    assert json.loads((out / "report.json").read_text())["summary"]["good"]["accuracy"] == good["accuracy"]
    assert "<svg" in (out / "report.html").read_text()
    # Every run went through the runner and is marked as an eval run in the run store.
    with sqlite3.connect(tmp_path / "data" / "runs.sqlite") as db:
        marked = db.execute("select initiator, count(*) from runs group by initiator").fetchall()
    assert sorted(count for _, count in marked) == [4, 4, 4]
    assert all(initiator.startswith("eval:") and initiator.endswith((":good", ":weak", ":cascade")) for initiator, _ in marked)

    # The same command again: every case is finished, nothing is asked of the model; the table prints.
    asked = len(server.requests)
    again = flotilla(tmp_path, *args)
    assert again.returncode == 0, again.stderr.decode()
    assert len(server.requests) == asked
    table = again.stdout.decode()
    for text in ("accuracy (all fields)", "extract.vendor", "needs_review rate", "quality per dollar", "good", "weak", "cascade", "disagree"):
        assert text in table
    assert "report.html" in table


def test_gates_fail_the_command_for_ci(tmp_path: Path, endpoint) -> None:
    _, url = endpoint
    configs = write_configs(tmp_path, url)
    base = ["eval", "document_triage", "--dataset", str(CASES), "--config", str(configs["good"]), "--out", "out", "--limit", "2"]
    passing = flotilla(tmp_path, *base, "--fail-below", "accuracy=0.9", "--fail-below", "needs_review_rate<=0")
    assert passing.returncode == 0, passing.stderr.decode()
    failing = flotilla(tmp_path, *base, "--fail-below", "accuracy=1.01", "--fail-below", "p99_ms<=0.001")
    assert failing.returncode == 1
    err = failing.stderr.decode()
    assert "good: accuracy is 1.0, the gate is >= 1.01" in err and "p99_ms" in err
    bad = flotilla(tmp_path, *base, "--fail-below", "happiness=0.5")
    assert bad.returncode == 2 and "unknown metric 'happiness'" in bad.stderr.decode()


def _dataset(tmp: Path, lines: list[str]) -> Path:
    path = tmp / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    (tmp / "scorers.yaml").write_text((DATA / "scorers.yaml").read_text())
    return path


@pytest.mark.parametrize(
    ("second_line", "message"),
    [
        ('{"id": "b", "input": "x", "expected": {', "bad.jsonl line 2: not JSON"),
        ('{"id": "b", "input": "x", "expected": {"extract": {"amount_due": 5}}}', "bad.jsonl line 2: agent 'extract' does not produce a field 'amount_due'"),
        ('{"id": "b", "input": "x", "expected": {"extract": {"total": "twelve"}}}', "bad.jsonl line 2: extract.total: \"twelve\" is not a valid value"),
        ('{"id": "b", "input": "x", "expected": {"vendor": {"name": "x"}}}', "bad.jsonl line 2: workflow 'document_triage' has no agent 'vendor' with an output schema"),
        ('{"id": "a", "input": "x"}', "bad.jsonl line 2: id 'a' is already used on line 1"),
    ],
)
def test_a_bad_dataset_line_is_named_before_anything_runs(tmp_path: Path, second_line: str, message: str) -> None:
    good = json.dumps({"id": "a", "input": "x", "expected": {"decide": {"decision": "approve"}}})
    dataset = _dataset(tmp_path, [good, second_line])
    proc = flotilla(tmp_path, "eval", "document_triage", "--dataset", str(dataset), "--config", str(tmp_path / "none.yaml"), timeout=60)
    assert proc.returncode == 2
    err = proc.stderr.decode()
    assert message in err, err
    assert "Traceback" not in err and not (tmp_path / "evals").exists()


def test_config_overlay_errors_are_validate_style(tmp_path: Path) -> None:
    (tmp_path / "alias.yaml").write_text("agents:\n  extract:\n    model: [specialist-extract, frontier-xl]\n")
    (tmp_path / "typo.yaml").write_text("model:\n  specialist-extract: {provider: embedded}\n")
    (tmp_path / "agent.yaml").write_text("agents:\n  extractor: {max_tokens: 10}\n")
    expected = {
        "alias.yaml": "unknown model alias 'frontier-xl'",
        "typo.yaml": "unknown key(s) model",
        "agent.yaml": "has no agent 'extractor'",
    }
    for name, message in expected.items():
        proc = flotilla(tmp_path, "eval", "document_triage", "--dataset", str(CASES), "--config", str(tmp_path / name), timeout=60)
        err = proc.stderr.decode()
        assert proc.returncode == 2 and message in err and name in err, err


def test_ctrl_c_keeps_finished_cases_and_the_rerun_continues(tmp_path: Path, endpoint) -> None:
    server, url = endpoint
    configs = write_configs(tmp_path, url)
    asked = {"invoices": 0}

    def slow_after_two(body: dict) -> Reply:
        if schema_name(body) == "Invoice":
            asked["invoices"] += 1
            if asked["invoices"] > 2:
                return Reply(json.dumps({}), delay_s=60)  # the third case hangs until Ctrl-C
        return answer(body)

    server.default = slow_after_two
    args = ["eval", "document_triage", "--dataset", str(CASES), "--config", str(configs["good"]), "--out", "out", "--concurrency", "1"]
    proc = flotilla(tmp_path, *args, popen=True)
    results = tmp_path / "out" / "results.jsonl"
    deadline = time.monotonic() + 120
    while not (results.exists() and len(results.read_text().splitlines()) >= 2) and asked["invoices"] < 3:
        assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read().decode() if proc.poll() is not None else "timed out"
        time.sleep(0.1)
    while asked["invoices"] < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = communicate_or_explain(proc, timeout=60)
    err = stderr.decode()
    assert proc.returncode == 130, err
    assert "2 finished case result(s) are kept" in err
    assert "resume with: flotilla eval document_triage --dataset" in err
    assert len(results.read_text().splitlines()) == 2

    server.default = answer
    before = len(server.requests)
    rerun = flotilla(tmp_path, *args, "--json")
    assert rerun.returncode == 0, rerun.stderr.decode()
    assert json.loads(rerun.stdout)["summary"]["good"]["cases"] == 4
    assert [schema_name(b) for b in server.requests[before:]] == ["Invoice", "Invoice"]  # only the two unfinished cases ran
