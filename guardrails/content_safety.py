"""Content safety without an LLM: Llama Guard 3's hazard categories (S1–S14) over local MiniLM embeddings.

A multinomial logistic regression (classes `safe`, S1…S14) on the same embedding the injection
classifier uses, so at a point where both run the MiniLM pass is paid once (the embedder caches
per text). The score is P(unsafe) = 1 − P(safe); the category is the most likely unsafe class.
Thresholds per point (input: requests; agent-output/output: content) are calibrated on held-out
validation sources and stored with the weights (`guardrails/models/content_safety.npz`, trained by
`python -m flotilla.guardrails.training.train_safety`). The file also holds a small sample of
training embeddings and texts, so a decision can show its nearest training examples (`explain`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import numpy as np

from flotilla.audit.errors import ConfigError
from flotilla.guardrails._timing import Stopwatch
from flotilla.guardrails.base import RailPoint, Verdict
from flotilla.guardrails.embeddings import LocalEmbedder
from flotilla.guardrails.llama_guard import HAZARD_CATEGORIES

__all__ = ["ContentSafetyClassifier", "ContentSafetyRail", "SafetyScore", "Neighbour", "default_weights_path", "nearest_examples"]

# Points whose text is a request (scored against request thresholds); the rest are content.
_REQUEST_POINTS = frozenset({RailPoint.INPUT, RailPoint.TOOL_ARGS})


def default_weights_path() -> Path:
    return Path(str(files("flotilla.guardrails").joinpath("models/content_safety.npz")))


@dataclass(frozen=True, slots=True)
class SafetyScore:
    score: float
    """P(unsafe) in [0, 1]."""
    category: str
    """The most likely hazard category (S1…S14), whatever the score."""


@dataclass(frozen=True, slots=True)
class Neighbour:
    text: str
    label: str
    similarity: float


def nearest_examples(vectors: np.ndarray, texts: Sequence[str], labels: Sequence[str], query: np.ndarray, k: int) -> list[Neighbour]:
    """The `k` stored examples closest to `query` by cosine (all vectors are L2-normalised)."""
    sims = vectors.astype(np.float32) @ query.reshape(-1).astype(np.float32)
    order = np.argsort(-sims)[:k]
    return [Neighbour(str(texts[i]), str(labels[i]), float(sims[i])) for i in order]


class ContentSafetyClassifier:
    """Scores texts; thresholds per point come from the weights file unless overridden."""

    def __init__(self, embedder: LocalEmbedder, weights: Path | None = None) -> None:
        path = weights or default_weights_path()
        if not path.is_file():
            raise ConfigError(f"content-safety weights not found at {path}; "
                              "train them with `python -m flotilla.guardrails.training.train_safety`")
        with np.load(path) as data:
            self.coef = data["coef"].astype(np.float32)
            self.intercept = data["intercept"].astype(np.float32)
            self.classes = [str(c) for c in data["classes"]]
            self.thresholds: dict[str, float] = json.loads(str(data["thresholds"]))
            self.metadata = json.loads(str(data["metadata"]))
            self._exemplars = (data["exemplar_vectors"], list(data["exemplar_texts"]), list(data["exemplar_labels"]))
        if self.classes[0] != "safe":
            raise ConfigError(f"{path}: the first class must be 'safe', found {self.classes[0]!r}; retrain the weights")
        self.embedder = embedder

    def threshold(self, point: RailPoint) -> float:
        return self.thresholds["request" if point in _REQUEST_POINTS else "content"]

    def score_vectors(self, vectors: np.ndarray) -> list[SafetyScore]:
        logits = vectors @ self.coef.T + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        top = probs[:, 1:].argmax(axis=1) + 1
        return [SafetyScore(float(1.0 - p[0]), self.classes[t]) for p, t in zip(probs, top, strict=True)]

    def scores(self, texts: list[str]) -> list[SafetyScore]:
        return self.score_vectors(self.embedder.encode(texts))

    def explain(self, text: str, k: int = 5) -> list[Neighbour]:
        vectors, texts, labels = self._exemplars
        return nearest_examples(vectors, texts, labels, self.embedder.encode([text])[0], k)


class ContentSafetyRail:
    """Blocks text whose P(unsafe) reaches the point's threshold; names category, score, threshold."""

    name = "content-safety"

    def __init__(
        self,
        classifier: ContentSafetyClassifier,
        *,
        points: Sequence[RailPoint] = (RailPoint.INPUT, RailPoint.AGENT_OUTPUT),
        thresholds: Mapping[RailPoint, float] | None = None,
    ) -> None:
        self.classifier = classifier
        self.points = frozenset(points)
        self.thresholds = dict(thresholds or {})

    def threshold(self, point: RailPoint) -> float:
        return self.thresholds.get(point, self.classifier.threshold(point))

    def decide(self, result: SafetyScore, point: RailPoint, latency_ms: float) -> Verdict:
        threshold = self.threshold(point)
        flagged = result.score >= threshold
        name = HAZARD_CATEGORIES[result.category].rstrip(".")
        return Verdict(
            engine=self.name, rule=result.category if flagged else "safe", allowed=not flagged, latency_ms=latency_ms,
            score=result.score,
            detail=f"{result.category} {name}: score {result.score:.2f} >= threshold {threshold:.2f}" if flagged else "",
            attributes={"threshold": threshold, "category": result.category, "category_name": name},
        )

    def check_sync(self, text: str, *, point: RailPoint) -> Verdict:
        watch = Stopwatch()
        result = self.classifier.scores([text])[0]
        return self.decide(result, point, watch.ms)

    async def check(self, text: str, *, point: RailPoint) -> Verdict:
        return await asyncio.to_thread(self.check_sync, text, point=point)
