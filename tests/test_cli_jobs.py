"""`flotilla runs recover|expire` through runtime/cli_jobs.py: the runtime built from flotilla.yaml,
the job run on its runner, and a bad configuration an exit 2 with what to fix (no traceback)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flotilla.runtime.cli import app


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FLOTILLA_CONFIG", str(tmp_path / "flotilla.yaml"))
    monkeypatch.setenv("FLOTILLA_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FLOTILLA_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "flotilla.yaml").write_text("metrics: false\n")
    return tmp_path


def flotilla(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def test_jobs_run_on_the_runner_of_the_configured_runtime(project: Path) -> None:
    assert flotilla("runs", "expire", "--json") == (0, json.dumps({"expired": []}) + "\n", "")
    code, out, _ = flotilla("runs", "recover", "--json")
    assert (code, json.loads(out)) == (0, {"recovered": []})


def test_a_bad_configuration_is_exit_2_saying_what_to_fix(project: Path) -> None:
    (project / "flotilla.yaml").write_text("backend: nowhere\n")
    code, out, err = flotilla("runs", "expire")
    assert code == 2 and out == "" and "backend" in err and "Traceback" not in err


def test_recover_on_the_temporal_backend_says_there_is_nothing_to_do(project: Path) -> None:
    (project / "flotilla.yaml").write_text("metrics: false\nbackend: temporal\n")
    code, _, err = flotilla("runs", "recover")
    assert code == 2 and "the temporal backend recovers runs itself" in " ".join(err.split())
