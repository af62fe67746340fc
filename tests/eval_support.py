"""Shared by the eval tests: a scripted OpenAI-compatible endpoint answering per model name, the
overlays pointing configs at it, and `flotilla eval` run as a user runs it (a subprocess)."""

from __future__ import annotations

import copy
import json
import os
import signal
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
    if popen:
        env["PYTHONFAULTHANDLER"] = "1"  # SIGABRT dumps every thread's stack (see `communicate_or_explain`)
    command = [sys.executable, "-m", "flotilla.runtime", *args]
    if popen:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp)
    return subprocess.run(command, capture_output=True, env=env, cwd=tmp, timeout=timeout)


def communicate_or_explain(proc: subprocess.Popen, timeout: float) -> tuple[bytes, bytes]:
    """`proc.communicate(timeout)`; when it times out, fail with what was stuck: whether the process
    had exited (a descendant then holds its pipes), its descendants, and every thread's stack."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        exited = proc.poll()
        table = subprocess.run(["ps", "-e", "-o", "pid=,ppid=,stat=,etime=,args="], capture_output=True, text=True).stdout
        rows = [line.split(None, 4) for line in table.splitlines()]
        family, grew = {proc.pid}, True
        while grew:
            grew = False
            for row in rows:
                if int(row[1]) in family and int(row[0]) not in family:
                    family.add(int(row[0]))
                    grew = True
        tree = "\n".join(" ".join(row) for row in rows if int(row[0]) in family)
        if exited is None:
            proc.send_signal(signal.SIGABRT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        for pid in family:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _, err = proc.communicate()
        raise AssertionError(f"no exit within {timeout}s (exit code then: {exited}); processes:\n{tree}\nstderr:\n{err.decode(errors='replace')}") from None
