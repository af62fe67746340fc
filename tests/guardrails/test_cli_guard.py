import json

from typer.testing import CliRunner

from flotilla.runtime.cli import app


def test_guard_check_prints_json_verdict_and_exits_blocked() -> None:
    result = CliRunner().invoke(app, ["guard", "check", "--point", "input", "<script>alert(document.cookie)</script>"])
    assert result.exit_code == 3, result.output
    report = json.loads(result.stdout)
    assert report["allowed"] is False and report["blocked_by"]["engine"] == "yara"
    (verdict,) = report["verdicts"]
    assert {"engine", "rule", "score", "latency_ms", "allowed", "enabled"} <= set(verdict)


def test_guard_check_rejects_unknown_point() -> None:
    result = CliRunner().invoke(app, ["guard", "check", "--point", "sideways", "hello"])
    assert result.exit_code == 2 and "unknown point" in result.stderr


def test_guard_engines_reports_llama_guard_disabled_without_weights() -> None:
    result = CliRunner().invoke(app, ["guard", "engines", "--workflow", "document_triage"])
    assert result.exit_code == 0, result.output
    engines = {e["engine"]: e for e in json.loads(result.stdout)}
    assert engines["llama-guard"]["enabled"] is False and "no Llama Guard weights" in engines["llama-guard"]["disabled_reason"]
