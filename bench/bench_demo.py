"""The demo as a newcomer meets it: `flotilla run document_triage` on the sample invoice,
end to end on the embedded model, timed as a whole process — first with an empty weights
cache (GGUF → dequantised safetensors), then warm. Prints wall times, each as a ratio of the
60 s goal for a warm demo on 2 cores, the cold/warm ratio, per-step latencies (and what
produced each step: the model, an MCP tool, or a function), and the process's peak RSS.

    python bench/bench_demo.py
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "graphs" / "samples" / "invoice.txt"
GOAL_S = 60.0


def run(env: dict[str, str]) -> tuple[float, dict]:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "flotilla.runtime", "run", "document_triage", "--input", str(SAMPLE), "--json"],
        capture_output=True, env=env, cwd=ROOT, timeout=1800,
    )
    elapsed = time.perf_counter() - started
    if not proc.stdout.strip():
        sys.exit(f"demo produced no result:\n{proc.stderr.decode()[-2000:]}")
    return elapsed, json.loads(proc.stdout)


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="flotilla-demo-bench-"))
    env = {**os.environ, "FLOTILLA_DATA_DIR": str(tmp / "data"), "FLOTILLA_CACHE_DIR": str(tmp / "cache"), "HF_HUB_OFFLINE": "1"}
    cold_s, cold = run(env)
    warm_s, warm = run(env)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"demo, cold weights cache: {cold_s:6.1f} s  = {cold_s / GOAL_S:.2f}x the {GOAL_S:.0f} s goal  status={cold['status']}")
    print(f"demo, warm weights cache: {warm_s:6.1f} s  = {warm_s / GOAL_S:.2f}x the {GOAL_S:.0f} s goal  status={warm['status']}")
    print(f"cold / warm: {cold_s / warm_s:.2f}x")
    for step in warm["steps"]:
        tokens = f"{step['input_tokens']}→{step['output_tokens']} tok"
        made_by = step.get("produced_by") or f"model {step['model']}"
        print(f"  {step['agent']:<15} {step['latency_ms'] or 0:8.0f} ms  {tokens:<14} ok={step['ok']}  {made_by}")
    model_ms = sum(s["latency_ms"] or 0 for s in warm["steps"])
    print(f"model time / warm wall time: {model_ms / 1000 / warm_s:.2f} (the rest is start-up and load)")
    print(f"peak RSS of the demo process: {peak_rss_mb:.0f} MB")


if __name__ == "__main__":
    main()
