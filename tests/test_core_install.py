"""`pip install flotilla` with no extras, beside the OpenAI Agents SDK, in a venv of its own:
both import, torch is nowhere, and `flotilla run` drives a workflow against an OpenAI-compatible
endpoint (the scripted test server, on loopback in this process), the rails that need the
[rails] extra reporting themselves off.

The venv comes from PyPI the first time (about a minute) and is cached under
.cache/core-venv/<key>, the key hashing the core dependency list, the extra packages and the
Python version; later runs only reinstall the freshly built wheel. Delete the folder for a
from-scratch install. Select or skip with `-m install` / `-m "not install"`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from tests.support.scripted_openai import ScriptedOpenAI, by_schema, schema_name
from tests.support.servers import serve_app
from tests.support.triage import TRIAGE_ANSWERS
from tests.support.wheel import REPO, build_wheel

pytestmark = pytest.mark.install

CACHE = REPO / ".cache" / "core-venv"
BESIDE = ["openai-agents"]
"""Installed next to flotilla: its import name is `agents`, the name flotilla used to take."""
HEAVY = ["torch", "transformers", "sentence_transformers", "nemoguardrails", "yara", "xgrammar", "sklearn"]
"""What the [embedded] and [rails] extras bring; a core install has none of it."""
ALIASES = ("specialist-extract", "specialist-analyze", "specialist-decide", "specialist-write")
SAMPLE = REPO / "graphs" / "samples" / "invoice.txt"


def core_requirements() -> list[str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]


def venv_env(venv: Path, **extra: str) -> dict[str, str]:
    """This machine's environment minus anything that would let the venv see the repo's sources."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", NEMO_GUARDRAILS_NO_USAGE_STATS="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.update(extra)
    return env


def in_venv(venv: Path, *args: str, cwd: Path, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=venv_env(venv, **env), capture_output=True, text=True, timeout=timeout)


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """One pytest process at a time creates or updates a cached venv."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="module")
def core_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("core-install")
    wheel = build_wheel(work / "wheel")
    key = hashlib.sha256(json.dumps([sys.version_info[:2], core_requirements(), BESIDE]).encode()).hexdigest()[:16]
    venv = CACHE / key
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    with locked(CACHE / f"{key}.lock"):
        if (venv / ".complete").exists():
            # same dependency list: only flotilla itself changed
            proc = in_venv(venv, *pip, "--no-deps", "--force-reinstall", str(wheel), cwd=work)
        else:
            for stale in CACHE.iterdir():  # venvs of older dependency lists
                if stale.is_dir():
                    shutil.rmtree(stale, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
            proc = in_venv(venv, *pip, str(wheel), *BESIDE, cwd=work, timeout=1800)
            if proc.returncode == 0:
                (venv / ".complete").touch()
    assert proc.returncode == 0, f"pip install failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return venv


def test_flotilla_and_the_openai_agents_sdk_import_side_by_side(core_venv: Path, tmp_path: Path) -> None:
    probe = """
import json
from agents import Agent, Runner            # the OpenAI Agents SDK owns `agents`
import agents, flotilla.agents, flotilla.graphs, flotilla.guardrails
print(json.dumps({
    "sdk": agents.__file__, "agent_class": Agent.__module__, "runner": Runner.__name__,
    "flotilla": list(flotilla.__path__), "flotilla_agents": flotilla.agents.__file__,
    "flotilla_graphs": flotilla.graphs.__file__,
}))
"""
    proc = in_venv(core_venv, str(core_venv / "bin" / "python"), "-c", probe, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    site = str(core_venv / "lib")
    assert found["sdk"].startswith(site) and found["sdk"].endswith("/agents/__init__.py")
    assert found["agent_class"].startswith("agents.") and found["runner"] == "Runner"
    assert all(p.startswith(site) for p in found["flotilla"])  # the installed wheel, not the repo
    assert found["flotilla_agents"].endswith("/flotilla/agents/__init__.py") and found["flotilla_agents"].startswith(site)
    assert found["flotilla_graphs"].startswith(site)

    check = in_venv(core_venv, str(core_venv / "bin" / "python"), "-m", "pip", "check", cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr  # both projects' requirements hold together


def test_a_core_install_has_no_torch_and_no_rails_engines(core_venv: Path, tmp_path: Path) -> None:
    probe = f"import importlib.util, json; print(json.dumps({{m: importlib.util.find_spec(m) is not None for m in {HEAVY!r}}}))"
    proc = in_venv(core_venv, str(core_venv / "bin" / "python"), "-c", probe, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == dict.fromkeys(HEAVY, False)


def test_flotilla_run_succeeds_against_an_openai_compatible_endpoint(core_venv: Path, tmp_path: Path) -> None:
    server = ScriptedOpenAI(default=by_schema(TRIAGE_ANSWERS))
    with serve_app(server.app()) as url:
        config = {"models": {alias: {"provider": "openai-compatible", "base_url": f"{url}/v1", "model": alias, "max_retries": 0} for alias in ALIASES}}
        (tmp_path / "flotilla.yaml").write_text(yaml.safe_dump(config))
        proc = in_venv(
            core_venv, str(core_venv / "bin" / "flotilla"), "run", "document_triage", "--input", str(SAMPLE), "--json",
            cwd=tmp_path, FLOTILLA_CONFIG=str(tmp_path / "flotilla.yaml"),
            FLOTILLA_DATA_DIR=str(tmp_path / "data"), FLOTILLA_CACHE_DIR=str(tmp_path / "cache"),
        )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    result = json.loads(proc.stdout)
    assert result["status"] == "succeeded" and result["error"] is None
    assert result["output"]["subject"] == "Invoice INV-2026-0412: approved"  # the ledger server runs in a core install too
    assert [s["model"] for s in result["steps"]] == ["specialist-extract", *[None] * 6]  # then tool and function nodes
    assert [schema_name(body) for body in server.requests] == ["Invoice"]
    assert (tmp_path / "data" / "runs.sqlite").is_file()
    # the engines of the [rails] extra say they did not run, and how to get them
    rails_notices = [n for n in result["notices"] if "flotilla[rails]" in n]
    assert any("yara" in n for n in rails_notices) and any("injection-classifier" in n for n in rails_notices), result["notices"]
