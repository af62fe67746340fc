"""Shared by the eval tests: a scripted OpenAI-compatible endpoint answering per model name, the
overlays pointing configs at it, and `flotilla eval` run as a user runs it (a subprocess)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.scripted_openai import Reply, ScriptedOpenAI, schema_name
from tests.support.triage import TRIAGE_ANSWERS

DATA = Path(__file__).resolve().parent / "data" / "eval"
CASES = DATA / "cases.jsonl"
ALIASES = ("specialist-extract", "specialist-analyze", "specialist-decide", "specialist-write", "frontier")


def answer(body: dict) -> Reply:
    """`good` reads the sample invoice right; `weak` misreads the vendor (verification catches it)."""
    answers = copy.deepcopy(TRIAGE_ANSWERS)
    if body.get("model") == "weak":
        answers["Invoice"]["vendor"] = "Southwind Traders"
    return Reply(json.dumps(answers[schema_name(body)]))


def scripted_server() -> ScriptedOpenAI:
    return ScriptedOpenAI(default=answer)


def write_configs(tmp: Path, url: str) -> dict[str, Path]:
    """good: every alias on model `good` (priced); weak: extract on `weak`, no other tier;
    cascade: extract tries `weak`, then escalates to `frontier` (model `good`)."""
    def endpoint(model: str) -> str:
        return f"{{provider: openai-compatible, base_url: {url}/v1, model: {model}, max_retries: 0}}"

    folder = tmp / "configs"
    folder.mkdir(parents=True, exist_ok=True)
    models = "\n".join(f"  {alias}: {endpoint('good')}" for alias in ALIASES)
    prices = "prices:\n  specialist-extract: {input_per_mtok: 3, output_per_mtok: 15}\n  frontier: {input_per_mtok: 30, output_per_mtok: 150}\n"
    paths = {
        "good": f"description: the good model\nmodels:\n{models}\n{prices}",
        "weak": f"models:\n{models}\n  specialist-extract: {endpoint('weak')}\n{prices}",
        "cascade": f"models:\n{models}\n  specialist-extract: {endpoint('weak')}\n{prices}agents:\n  extract:\n    model: [specialist-extract, frontier]\n",
    }
    out = {}
    for name, text in paths.items():
        out[name] = folder / f"{name}.yaml"
        out[name].write_text(text)
    return out


def flotilla(tmp: Path, *args: str, timeout: float = 180, popen: bool = False):
    env = {**os.environ, "FLOTILLA_DATA_DIR": str(tmp / "data"), "FLOTILLA_CACHE_DIR": str(tmp / "cache"), "COLUMNS": "200"}
    env.pop("FLOTILLA_CONFIG", None)
    command = [sys.executable, "-m", "flotilla.runtime", *args]
    if popen:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp)
    return subprocess.run(command, capture_output=True, env=env, cwd=tmp, timeout=timeout)
