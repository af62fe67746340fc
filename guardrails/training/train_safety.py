"""Train the content-safety classifier: multinomial logistic regression (safe, S1…S14) over MiniLM.

    python -m flotilla.guardrails.training.train_safety      # writes guardrails/models/content_safety.npz

Data: guardrails/data/safety/ (see training/safety_corpus.py for the split by source). Weights are
fitted on the train split only. Two thresholds are calibrated on the validation split for a target
false-positive rate: `request` (input, tool-args) on benign requests and `content` (agent-output,
output) on benign agent outputs. The test split is scored once for the metadata; it never
influences weights or thresholds. `bench/bench_content_safety.py` prints the full per-source numbers.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from flotilla.guardrails.embeddings import EMBEDDER_ID, LocalEmbedder
from flotilla.guardrails.training.embed_cache import embed_cached
from flotilla.guardrails.training.safety_corpus import CATEGORIES, SAFE, SafetySample, load_safety_corpus

__all__ = ["train", "main", "DEFAULT_OUTPUT", "CLASSES", "embed_cached"]

DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "models" / "content_safety.npz"
CLASSES: tuple[str, ...] = (SAFE, *CATEGORIES)
# Exemplars kept in the weights file for `guard check --explain`: a few per class, float16.
_EXEMPLARS_PER_CLASS, _SAFE_EXEMPLARS = 40, 400


def _threshold(benign_scores: np.ndarray, target_fpr: float) -> float:
    """The smallest threshold flagging at most `target_fpr` of the benign validation scores."""
    return float(np.clip(np.quantile(benign_scores, 1.0 - target_fpr, method="higher") + 1e-4, 0.2, 0.97))


def _exemplars(train: list[SafetySample], x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    keep: list[int] = []
    for label in CLASSES:
        idx = [i for i, s in enumerate(train) if s.category == label]
        limit = _SAFE_EXEMPLARS if label == SAFE else _EXEMPLARS_PER_CLASS
        keep += sorted(rng.choice(idx, size=min(limit, len(idx)), replace=False).tolist())
    return x[keep].astype(np.float16), np.array([train[i].text for i in keep]), np.array([train[i].category for i in keep])


def train(*, output: Path = DEFAULT_OUTPUT, c: float = 1.0, target_fpr: float = 0.02, hard_negative_weight: float = 1.0) -> dict:
    from sklearn.linear_model import LogisticRegression

    corpus = load_safety_corpus()
    embedder = LocalEmbedder()
    by_split = {split: [s for s in corpus if s.split == split] for split in ("train", "val", "test")}
    vectors = {split: embed_cached(embedder, [s.text for s in samples]) for split, samples in by_split.items()}
    y = np.array([CLASSES.index(s.category) for s in by_split["train"]])

    # Hand-written hard negatives (sources `hard-negatives-*`) can count more than the bulk of safe
    # text: "balanced" class weights make each of the few harmful samples of a topic outweigh them.
    weights = np.array([hard_negative_weight if s.source.startswith("hard-negatives") else 1.0 for s in by_split["train"]])
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=3000)
    model.fit(vectors["train"], y, sample_weight=weights)
    if list(model.classes_) != list(range(len(CLASSES))):
        raise RuntimeError("every class needs training samples; check guardrails/data/safety/")

    def unsafe_scores(split: str) -> np.ndarray:
        return 1.0 - model.predict_proba(vectors[split])[:, 0]

    val, val_scores = by_split["val"], unsafe_scores("val")
    thresholds = {}
    for kind, name in (("request", "request"), ("content", "content")):
        benign = np.array([sc for s, sc in zip(val, val_scores, strict=True) if s.kind == kind and s.category == SAFE])
        thresholds[name] = _threshold(benign, target_fpr)

    def rates(split: str) -> dict[str, dict[str, float]]:
        samples, scores = by_split[split], unsafe_scores(split)
        out: dict[str, dict[str, float]] = {}
        for source in sorted({s.source for s in samples}):
            hits = [(s, sc) for s, sc in zip(samples, scores, strict=True) if s.source == source]
            flagged = [sc >= thresholds[s.kind] for s, sc in hits]
            harmful = hits[0][0].category != SAFE
            out[source] = {"n": len(hits), ("recall" if harmful else "false_positive_rate"): float(np.mean(flagged))}
        return out

    ex_vectors, ex_texts, ex_labels = _exemplars(by_split["train"], vectors["train"])
    report = {
        "thresholds": thresholds,
        "target_fpr": target_fpr,
        "C": c,
        "hard_negative_weight": hard_negative_weight,
        "classes": list(CLASSES),
        "samples": {split: len(samples) for split, samples in by_split.items()},
        "validation": rates("val"),
        "test": rates("test"),
        "embedding_model": EMBEDDER_ID,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        output,
        coef=model.coef_.astype(np.float32),
        intercept=model.intercept_.astype(np.float32),
        classes=np.array(CLASSES),
        thresholds=np.array(json.dumps(thresholds)),
        metadata=np.array(json.dumps(report)),
        exemplar_vectors=ex_vectors,
        exemplar_texts=ex_texts,
        exemplar_labels=ex_labels,
    )
    return report


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--c", type=float, default=1.0, help="inverse L2 regularisation strength")
    parser.add_argument("--target-fpr", type=float, default=0.02, help="false-positive rate the thresholds aim at on validation")
    parser.add_argument("--hard-negative-weight", type=float, default=1.0,
                        help="sample weight of `hard-negatives-*` sources (2 and 4 lost validation recall)")
    args = parser.parse_args(argv)
    report = train(output=args.output, c=args.c, target_fpr=args.target_fpr, hard_negative_weight=args.hard_negative_weight)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
