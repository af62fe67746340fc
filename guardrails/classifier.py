"""Jailbreak/injection detection without an LLM: logistic regression over local MiniLM embeddings.

The weights (`guardrails/models/injection_classifier.npz`) are trained by
`python -m flotilla.guardrails.training.train_injection`; scoring is one embedding + one dot product.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path

import numpy as np

from flotilla.audit.errors import ConfigError
from flotilla.guardrails._timing import Stopwatch
from flotilla.guardrails.base import RailPoint, Verdict
from flotilla.guardrails.embeddings import LocalEmbedder
from flotilla.guardrails.suffix_features import suffix_features

__all__ = ["InjectionClassifier", "InjectionClassifierRail", "default_weights_path"]


def default_weights_path() -> Path:
    return Path(str(files("flotilla.guardrails").joinpath("models/injection_classifier.npz")))


class InjectionClassifier:
    """Scores texts in [0, 1]; `threshold` (stored with the weights unless overridden) decides."""

    def __init__(self, embedder: LocalEmbedder, weights: Path | None = None, threshold: float | None = None) -> None:
        path = weights or default_weights_path()
        if not path.is_file():
            raise ConfigError(f"injection classifier weights not found at {path}; "
                              "train them with `python -m flotilla.guardrails.training.train_injection`")
        with np.load(path) as data:
            self.coef = data["coef"].astype(np.float32)
            self.intercept = float(data["intercept"])
            self.threshold = float(data["threshold"]) if threshold is None else threshold
            self.metadata = json.loads(str(data["metadata"]))
            # Weights trained with the suffix statistics appended to the embedding (suffix_features.py).
            self.suffix_scale = float(data["suffix_scale"]) if "suffix_scale" in data.files else 0.0
        self.embedder = embedder

    def features(self, texts: list[str], vectors: np.ndarray | None = None) -> np.ndarray:
        """What the weights read: the MiniLM embedding, then the scaled suffix statistics if trained with them."""
        vectors = self.embedder.encode(texts) if vectors is None else vectors
        if not self.suffix_scale:
            return vectors
        return np.hstack([vectors, self.suffix_scale * np.vstack([suffix_features(t) for t in texts])])

    def scores(self, texts: list[str], vectors: np.ndarray | None = None) -> np.ndarray:
        z = self.features(texts, vectors) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-z))


class InjectionClassifierRail:
    """Blocks text the classifier scores at or above its threshold."""

    name = "injection-classifier"

    def __init__(
        self,
        classifier: InjectionClassifier,
        *,
        points: Sequence[RailPoint] = (RailPoint.INPUT, RailPoint.TOOL_RESULT),
    ) -> None:
        self.classifier = classifier
        self.points = frozenset(points)

    def check_sync(self, text: str, *, point: RailPoint) -> Verdict:
        watch = Stopwatch()
        score = float(self.classifier.scores([text])[0])
        flagged = score >= self.classifier.threshold
        return Verdict(
            engine=self.name,
            rule="jailbreak" if flagged else "none",
            allowed=not flagged,
            latency_ms=watch.ms,
            score=score,
            detail=f"classifier score {score:.2f} >= {self.classifier.threshold:.2f}" if flagged else "",
            attributes={"threshold": self.classifier.threshold},
        )

    async def check(self, text: str, *, point: RailPoint) -> Verdict:
        return await asyncio.to_thread(self.check_sync, text, point=point)
