"""Why a classifier scored a text as it did: its nearest training examples (`flotilla guard check --explain`).

Each classifier's weights file may carry a sample of its training set (`exemplar_vectors`,
float16, L2-normalised; `exemplar_texts`; `exemplar_labels`). The text is embedded once (the
embedder caches it from the check that just ran) and compared by cosine — milliseconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from flotilla.guardrails.content_safety import nearest_examples

__all__ = ["explain"]


def _stored_examples(path: Path) -> tuple[np.ndarray, list[str], list[str]] | None:
    with np.load(path) as data:
        if "exemplar_vectors" not in data.files:
            return None
        return data["exemplar_vectors"], [str(t) for t in data["exemplar_texts"]], [str(x) for x in data["exemplar_labels"]]


def explain(rails: Any, text: str, *, workflow: str | None = None, k: int = 5) -> dict[str, Any]:
    """Per classifier engine enabled in `workflow`'s rails: its score and the `k` nearest training examples."""
    from flotilla.guardrails.classifier import default_weights_path as injection_weights

    cfg = rails.config(workflow)
    out: dict[str, Any] = {}
    if cfg.content_safety.enabled:
        classifier = rails.factory.safety_classifier(cfg)
        result = classifier.scores([text])[0]
        out["content-safety"] = {
            "score": round(result.score, 4), "category": result.category,
            "neighbours": [{"text": n.text, "label": n.label, "similarity": round(n.similarity, 3)} for n in classifier.explain(text, k)],
        }
    if cfg.injection_classifier.enabled:
        path = cfg.injection_classifier.weights or injection_weights()
        stored = _stored_examples(path)
        if stored is None:
            out["injection-classifier"] = {"neighbours": [], "note": f"{path} stores no training examples to compare with"}
        else:
            vector = rails.factory._embedder().encode([text])[0]
            out["injection-classifier"] = {"neighbours": [
                {"text": n.text, "label": n.label, "similarity": round(n.similarity, 3)} for n in nearest_examples(*stored, vector, k)
            ]}
    return out
