"""`flotilla export-finetune` from real runs (scripted models, the real runner, audit trail and run
store): the prompt exactly as the agent sent it, the accepted answer, teacher labels on their own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flotilla.agents.models.registry import ModelEndpoint, ModelRegistry
from flotilla.agents.models.testing import FunctionModel
from flotilla.audit.runs import RunStore
from flotilla.audit.sanitize import Sanitizer
from flotilla.audit.setup import audit_exporters
from flotilla.audit.store import AuditStore
from flotilla.audit.telemetry import Telemetry
from flotilla.graphs import WorkflowRunner, load_workflow
from flotilla.graphs.distill import examples_from_runs, prompt_agent
from flotilla.runtime.cli import app
from tests.graphs.tiers import DEGENERATE, GOOD, write_workflow

TEACHER = {"decision": "approve", "reasons": ["Every check passed on the second look."], "confidence": 0.8}
INPUTS = ["Invoice INV-1 from Acme Ltd, total 12.50 GBP.", "Invoice INV-2 from Acme Ltd, total 99.00 GBP.", "Invoice INV-1 from Acme Ltd, total 12.50 GBP."]


def _small(request) -> str:
    # The specialist fails verification on INV-2 (degenerate text): the big tier answers instead.
    return json.dumps(DEGENERATE if "INV-2" in request.messages[-1]["content"] else GOOD)


async def _run_all(data_dir: Path, policy: str) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    workflow = write_workflow(data_dir, model=["small", "big"])
    store = AuditStore(f"sqlite:///{data_dir / 'audit.sqlite'}")
    sanitizer = Sanitizer(policy)
    telemetry = Telemetry(audit_exporters(store, sanitizer))
    clients = {"small": FunctionModel(_small, name="small"), "big": FunctionModel(lambda r: json.dumps(TEACHER), name="big")}
    registry = ModelRegistry(
        {alias: ModelEndpoint(provider="openai-compatible", base_url="http://in-process", model=alias) for alias in clients},
        embedded=lambda: pytest.fail("every alias has a model"), http_client=lambda endpoint, key: clients[endpoint.model],
    )
    runs = RunStore(f"sqlite:///{data_dir / 'runs.sqlite'}", audit=store, sanitizer=sanitizer)
    runner = WorkflowRunner(registry=registry, telemetry=telemetry, runs=runs, checkpoint_path=data_dir / "cp.sqlite", max_input_bytes=10_000)
    try:
        for text in INPUTS:
            assert (await runner.run(load_workflow(str(workflow)), text, initiator="test")).status == "succeeded"
    finally:
        await runner.aclose()
        telemetry.shutdown()
    return workflow


async def test_export_keeps_the_agents_prompt_and_the_accepted_answer(tmp_path: Path) -> None:
    workflow = await _run_all(tmp_path, "full")
    store, runs = AuditStore(f"sqlite:///{tmp_path / 'audit.sqlite'}"), RunStore(f"sqlite:///{tmp_path / 'runs.sqlite'}")
    examples, report = examples_from_runs(runs, store, "tiered", "decide")
    assert report.runs == 3 and len(examples) == 3
    agent = prompt_agent(load_workflow(str(workflow)), "decide")
    assert [e["messages"][:-1] for e in examples] == [agent.messages({"input": text, "outputs": {}}) for text in INPUTS]
    assert [json.loads(e["messages"][-1]["content"]) for e in examples] == [GOOD, TEACHER, GOOD]

    teacher, report = examples_from_runs(runs, store, "tiered", "decide", only="escalated")
    assert len(teacher) == 1 and json.loads(teacher[0]["messages"][-1]["content"]) == TEACHER
    assert "INV-2" in teacher[0]["messages"][1]["content"] and report.skipped == {"not escalated": 2}


async def test_cli_writes_deduplicated_train_and_validation_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workflow = await _run_all(tmp_path / "data", "full")
    monkeypatch.setenv("FLOTILLA_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "decide.jsonl"
    result = CliRunner().invoke(app, ["export-finetune", "--workflow", str(workflow), "--agent", "decide", "--out", str(out), "--validation", "0.5"])
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines() + (tmp_path / "decide.val.jsonl").read_text().splitlines()
    assert len(lines) == 2  # INV-1 twice, once kept
    assert "1 duplicates dropped" in result.output

    result = CliRunner().invoke(app, ["export-finetune", "--workflow", str(workflow), "--agent", "decide", "--only", "escalated", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert [json.loads(json.loads(line)["messages"][-1]["content"]) for line in (out.read_text() + (tmp_path / "decide.val.jsonl").read_text()).splitlines()] == [TEACHER]


async def test_no_runs_or_no_prompts_is_a_message_and_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workflow = await _run_all(tmp_path / "data", "off")  # content policy off: prompts are not kept
    monkeypatch.setenv("FLOTILLA_DATA_DIR", str(tmp_path / "data"))
    result = CliRunner().invoke(app, ["export-finetune", "--workflow", str(workflow), "--agent", "decide", "--out", str(tmp_path / "x.jsonl")])
    assert result.exit_code == 2 and "no runs of agent 'decide'" in result.output
    assert "content policy" in result.output and "Traceback" not in result.output

    result = CliRunner().invoke(app, ["export-finetune", "--workflow", str(workflow), "--agent", "write", "--out", str(tmp_path / "x.jsonl")])
    assert result.exit_code == 2 and "no model agent 'write'" in result.output
