"""Library progress bars and log noise stay out of flotilla's output.

The embedded model's first load converts the GGUF with transformers (a tqdm bar per tensor) and
then loads the weights ("Loading weights" bar); the CLI switches those off at their source and
shows its own spinner on a terminal instead. This test makes the first load happen (an empty
cache dir), so the noisiest path runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
LIBRARY_NOISE = ("Converting and de-quantizing", "Loading weights", "it/s]", "%|", "Batches:")


@pytest.mark.model
def test_loading_the_embedded_model_from_the_cli_prints_no_library_progress(tmp_path: Path) -> None:
    workflow = {
        "name": "embedded_note",
        "description": "One agent on the embedded model.",
        "input": {"type": "text", "description": "An invoice."},
        "agents": {
            "write": {
                "role": "Writes a short note.",
                "instructions": str(REPO / "agents" / "document_triage" / "write.md"),
                "output_schema": "flotilla.agents.document_triage.schemas:Note",
                "model": "embedded",
                "max_tokens": 24,
                "timeout_s": 600,
            }
        },
        "edges": [],
    }
    path = tmp_path / "embedded_note.yaml"
    path.write_text(yaml.safe_dump(workflow, sort_keys=False))
    env = {**os.environ, "FLOTILLA_DATA_DIR": str(tmp_path / "data"), "FLOTILLA_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("TQDM_DISABLE", None)  # the CLI must set the switches itself
    proc = subprocess.run(
        [sys.executable, "-m", "flotilla.runtime", "run", str(path), "--input", str(REPO / "graphs" / "samples" / "invoice.txt"), "--json"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=1200,
    )
    result = json.loads(proc.stdout)
    assert result["steps"] and result["steps"][0]["model"].startswith("embedded:"), proc.stderr  # the model loaded and answered
    assert any((tmp_path / "cache" / "embedded").glob("*/model.safetensors"))  # the weights were converted in this run
    for noise in LIBRARY_NOISE:
        assert noise not in proc.stdout, noise
        assert noise not in proc.stderr, noise
