"""Privacy: the whole rails stack — imports, model loads, every engine at every point — in a fresh
interpreter where any non-loopback connection or DNS lookup fails loudly and is recorded."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_rails_stack_makes_no_network_attempt(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_", "NEMO_"))}
    env["OMP_NUM_THREADS"] = "1"
    env["HOME"] = str(tmp_path)  # no caches from earlier runs can hide a download
    env.pop("XDG_CACHE_HOME", None)
    proc = subprocess.run(
        [sys.executable, "-m", "tests.guardrails.privacy_probe", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "{}"
    result = json.loads(last) if last.startswith("{") else {}
    assert proc.returncode == 0, f"network attempts: {result.get('attempts')}\n{proc.stderr[-3000:]}"
    assert result["attempts"] == []
    # Every engine really ran somewhere (nothing was skipped because it failed to load).
    ran = {engine for engines in result["engines"].values() for engine in engines}
    assert ran == {"presidio", "yara", "injection-classifier", "content-safety", "llama-guard", "nemo", "tool-result-screen"}
