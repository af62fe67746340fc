"""Cheap first, strong on doubt: the content-safety classifier with Llama Guard on its uncertain band.

Every text gets the classifier (milliseconds). Only a score inside `band` = [low, high) goes to
Llama Guard (one generate, seconds on CPU), whose answer then decides; below `low` the
classifier allows, at or above `high` it blocks. At points where Llama Guard is not configured
the classifier decides alone. Each verdict says which engine decided (`engine`) and records the
route in `attributes["cascade"]` (`classifier` or `llama-guard`) with the classifier's score.
"""

from __future__ import annotations

import asyncio
import dataclasses

from flotilla.guardrails._timing import Stopwatch
from flotilla.guardrails.base import RailPoint, Verdict
from flotilla.guardrails.content_safety import ContentSafetyRail

__all__ = ["SafetyCascade"]


class SafetyCascade:
    name = "content-safety"
    in_process_model = True
    """Llama Guard runs here, from local weights."""

    def __init__(self, classifier: ContentSafetyRail, llama_guard, *, band: tuple[float, float]) -> None:
        self.classifier = classifier
        self.llama_guard = llama_guard
        self.band = band
        self.points = classifier.points

    def routes_to_llama_guard(self, score: float, point: RailPoint) -> bool:
        return point in self.llama_guard.points and self.band[0] <= score < self.band[1]

    def check_sync(self, text: str, *, point: RailPoint) -> Verdict:
        watch = Stopwatch()
        cheap = self.classifier.check_sync(text, point=point)
        score = float(cheap.score or 0.0)
        if not self.routes_to_llama_guard(score, point):
            return dataclasses.replace(cheap, attributes={**cheap.attributes, "cascade": "classifier", "band": list(self.band)})
        strong = self.llama_guard.check_sync(text, point=point)
        return dataclasses.replace(
            strong, latency_ms=watch.ms,
            attributes={**strong.attributes, "cascade": "llama-guard", "band": list(self.band),
                        "classifier_score": score, "classifier_category": cheap.attributes.get("category"),
                        "category": (strong.attributes.get("categories") or [cheap.attributes.get("category")])[0]},
        )

    async def check(self, text: str, *, point: RailPoint) -> Verdict:
        return await asyncio.to_thread(self.check_sync, text, point=point)
