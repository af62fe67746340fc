"""The embedded engine vs real vLLM (CPU build) on the same model, the same prompts, in one run.

    python bench/bench_vllm.py [--tokens 96] [--repeats 3]

- decode tok/s (tokens after the first / time after the first) and per-request latency, for
  the embedded engine (int8, its default, and fp32, vLLM's precision here) and vLLM serving
  SmolLM2-135M from the embedded engine's own checkpoint; requests alternate between the two
  so background load on this shared machine hits both alike;
- multi-LoRA overhead on vLLM: the base model vs requests to one adapter with one loaded vs
  requests spread over four adapters with four loaded (random-init rank-8 PEFT adapters made
  here: their speed, not their answers, is what is measured), sequential and 4 at once;
- vLLM's start-up time (its venv is `make vllm-venv`);
- with `--preload-ab`: a second vLLM with the LD_PRELOAD its CPU worker asks for (Intel OpenMP
  from its venv, tcmalloc if installed), base-model requests alternating between the two.

Every reply is exactly `--tokens` long (vLLM: `ignore_eos`; the embedded engine: a prompt that
asks for a long story, replies shorter than that are reported). Prints the load average too.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PROMPTS = [
    "Write a long, detailed story about a lighthouse keeper and a storm.",
    "Explain, step by step and at length, how a supplier invoice is checked against a purchase order.",
    "Write a long letter to a supplier explaining why their invoice was put on hold.",
]


def vllm_request(base_url: str, model: str, prompt: str, tokens: int) -> tuple[float, float, int]:
    """One streamed chat request: (latency s, decode tok/s after the first token, tokens)."""
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=600)
    started = time.perf_counter()
    first = None
    count = 0
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=tokens,
        temperature=0.0,
        stream=True,
        extra_body={"ignore_eos": True, "min_tokens": tokens},
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            count += 1
            first = first or time.perf_counter()
    ended = time.perf_counter()
    client.close()
    rate = (count - 1) / (ended - first) if first and count > 1 else 0.0
    return ended - started, rate, count


def embedded_request(engine, prompt: str, tokens: int) -> tuple[float, float, int]:
    started = time.perf_counter()
    g = engine.generate([{"role": "user", "content": prompt}], max_tokens=tokens)
    return time.perf_counter() - started, g.decode_steps / g.decode_s if g.decode_s else 0.0, g.output_tokens


def summary(samples: list[tuple[float, float, int]]) -> tuple[float, float, float]:
    """(median latency s, median decode tok/s, mean tokens per reply)."""
    return statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples), statistics.mean(s[2] for s in samples)


def concurrent(base_url: str, models: list[str], tokens: int) -> tuple[float, float]:
    """len(models) requests at once, one per model: (wall s, total tokens / wall s)."""
    started = time.perf_counter()
    with ThreadPoolExecutor(len(models)) as pool:
        results = list(pool.map(lambda m: vllm_request(base_url, m, PROMPTS[0], tokens), models))
    wall = time.perf_counter() - started
    return wall, sum(r[2] for r in results) / wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--preload-ab", action="store_true")
    args = parser.parse_args()

    from flotilla.agents.models.embedded import EmbeddedEngine
    from flotilla.runtime.settings import load_settings
    from tests.support.vllm import model_dir, preload_libraries, random_adapter, start_vllm, vllm_python

    if vllm_python() is None:
        sys.exit("vLLM is not installed: run `make vllm-venv` first")
    cache_dir = load_settings().cache_dir
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="flotilla-bench-vllm-") as tmp:
        adapters = {f"bench-{i}": random_adapter(model_dir(cache_dir), Path(tmp) / f"bench-{i}", seed=i) for i in range(1, 5)}
        server = start_vllm(cache_dir, log_dir=Path(tmp) / "logs", max_loras=4, max_lora_rank=8)
        try:
            print(f"vLLM start-up (to /health): {server.started_in_s:.1f} s")
            engines = {"int8": EmbeddedEngine(cache_dir), "fp32": EmbeddedEngine(cache_dir, precision="fp32")}
            # warm-up: the first request on each path pays one-off costs
            vllm_request(server.base_url, server.model, PROMPTS[0], 8)
            for engine in engines.values():
                embedded_request(engine, PROMPTS[0], 8)

            rows: dict[str, list] = {"embedded int8": [], "embedded fp32": [], "vLLM base": [], "vLLM 1 adapter (1 loaded)": []}
            server.load_adapter("bench-1", adapters["bench-1"])
            for _ in range(args.repeats):
                for prompt in PROMPTS:  # interleaved: each prompt on every path in turn
                    rows["embedded int8"].append(embedded_request(engines["int8"], prompt, args.tokens))
                    rows["vLLM base"].append(vllm_request(server.base_url, server.model, prompt, args.tokens))
                    rows["embedded fp32"].append(embedded_request(engines["fp32"], prompt, args.tokens))
                    rows["vLLM 1 adapter (1 loaded)"].append(vllm_request(server.base_url, "bench-1", prompt, args.tokens))
                    print("  " + ", ".join(f"{k}: {v[-1][1]:.1f} tok/s" for k, v in rows.items()), file=sys.stderr, flush=True)
            one_at_once = concurrent(server.base_url, ["bench-1"] * 4, args.tokens)
            for name, path in adapters.items():
                server.load_adapter(name, path)
            four = rows["vLLM 4 adapters (4 loaded)"] = []
            for _ in range(args.repeats):
                for i, prompt in enumerate(PROMPTS * 2):  # round-robin over the four adapters
                    four.append(vllm_request(server.base_url, f"bench-{i % 4 + 1}", prompt, args.tokens))
            four_at_once = concurrent(server.base_url, list(adapters), args.tokens)
            base_at_once = concurrent(server.base_url, [server.model] * 4, args.tokens)
            attempts = server.network_attempts()
            preload_rows: dict[str, list] = {}
            if args.preload_ab:
                preloaded = start_vllm(cache_dir, log_dir=Path(tmp) / "logs", preload=True)
                try:
                    preload_rows = {"plain": [], "preloaded": []}
                    vllm_request(preloaded.base_url, preloaded.model, PROMPTS[0], 8)
                    for _ in range(args.repeats):
                        for prompt in PROMPTS:
                            preload_rows["plain"].append(vllm_request(server.base_url, server.model, prompt, args.tokens))
                            preload_rows["preloaded"].append(vllm_request(preloaded.base_url, preloaded.model, prompt, args.tokens))
                finally:
                    preloaded.stop()
        finally:
            server.stop()

    print(f"reply length: {args.tokens} tokens; {args.repeats} rounds of {len(PROMPTS)} prompts, paths interleaved; medians")
    print(f"\n{'path':<30}{'latency s':>11}{'decode tok/s':>14}{'tokens':>8}{'tok/s vs int8':>15}")
    ref = summary(rows["embedded int8"])[1]
    for name, samples in rows.items():
        latency, rate, tokens = summary(samples)
        print(f"{name:<30}{latency:>11.2f}{rate:>14.1f}{tokens:>8.0f}{rate / ref:>15.2f}")
    base, one, many = (summary(rows[k])[1] for k in ("vLLM base", "vLLM 1 adapter (1 loaded)", "vLLM 4 adapters (4 loaded)"))
    print(f"\nvLLM decode, 1 adapter / base: {one / base:.2f}x;  4 adapters round-robin / 1 adapter: {many / one:.2f}x")
    print(f"vLLM / embedded int8 decode: {base / ref:.2f}x;  vLLM / embedded fp32 decode: {base / summary(rows['embedded fp32'])[1]:.2f}x")
    print("\n4 requests at once (continuous batching), total tok/s:")
    print(f"  base model x4: {base_at_once[1]:.1f} ({base_at_once[0]:.1f} s)")
    print(f"  one adapter x4: {one_at_once[1]:.1f} ({one_at_once[0]:.1f} s)")
    print(f"  four adapters, one each: {four_at_once[1]:.1f} ({four_at_once[0]:.1f} s)  -> four / one adapter: {four_at_once[1] / one_at_once[1]:.2f}x")
    if preload_rows:
        plain, pre = summary(preload_rows["plain"]), summary(preload_rows["preloaded"])
        print(f"\nLD_PRELOAD={':'.join(Path(p).name for p in preload_libraries())}: decode {pre[1]:.1f} vs {plain[1]:.1f} tok/s plain "
              f"({pre[1] / plain[1]:.2f}x), latency {pre[0]:.2f} vs {plain[0]:.2f} s")
    print(f"\nvLLM non-loopback network attempts: {len(attempts)}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
