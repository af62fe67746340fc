"""A workflow's own cut-offs for a scoring rail: per-point thresholds and allow-listed phrases.

    rails:
      injection_classifier: {thresholds: {input: 0.8}, allow: ["ignore the previous invoice"]}
      content_safety: {thresholds: {agent-output: 0.9}, allow: ["kill the process"]}

Allow-listed phrases are *removed* before scoring rather than letting a whole text through, so
"ignore the previous invoice; also ignore all previous instructions" is still scored on its
second half. A text that is nothing but allow-listed phrases is allowed without scoring.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence

from flotilla.guardrails.base import Rail, RailPoint, Verdict

__all__ = ["TunedRail", "strip_allowed", "describe_tuning"]


def strip_allowed(text: str, allow: Sequence[str]) -> tuple[str, list[str]]:
    """`text` without the allow-listed phrases (case-insensitive), and the phrases found."""
    found = []
    for phrase in allow:
        pattern = re.compile(re.escape(phrase), re.IGNORECASE)
        if pattern.search(text):
            found.append(phrase)
            text = pattern.sub(" ", text)
    return text, found


class TunedRail:
    """Wraps a rail whose verdicts carry a `score`: re-decides with the point's threshold.

    `flag_rule` names the decision when the wrapped verdict has no `category` attribute (the
    injection classifier says `jailbreak`; content safety carries its S-category)."""

    def __init__(self, inner: Rail, *, thresholds: Mapping[RailPoint, float] | None = None,
                 allow: Sequence[str] = (), flag_rule: str = "flagged") -> None:
        self.inner = inner
        self.name = inner.name
        self.points = inner.points
        self.thresholds = dict(thresholds or {})
        self.allow = list(allow)
        self.flag_rule = flag_rule

    def __getattr__(self, item: str):  # model locality, classifier, explain …: the wrapped rail's
        return getattr(self.inner, item)

    async def check(self, text: str, *, point: RailPoint) -> Verdict:
        scored, found = strip_allowed(text, self.allow) if self.allow else (text, [])
        extra = {"allow_listed": found} if found else {}
        if found and not re.search(r"\w", scored):
            return Verdict(engine=self.name, rule="allow-listed", allowed=True, latency_ms=0.0,
                           detail=f"only allow-listed phrases: {', '.join(found)}", attributes=extra)
        verdict = await self.inner.check(scored, point=point)
        if point not in self.thresholds or verdict.score is None:
            return dataclasses.replace(verdict, attributes={**verdict.attributes, **extra}) if extra else verdict
        threshold = self.thresholds[point]
        flagged = verdict.score >= threshold
        rule = str(verdict.attributes.get("category") or self.flag_rule) if flagged else ("safe" if "category" in verdict.attributes else "none")
        name = verdict.attributes.get("category_name")
        what = f"{rule} {name}" if flagged and name else rule
        return dataclasses.replace(
            verdict, allowed=not flagged, rule=rule,
            detail=f"{what}: score {verdict.score:.2f} >= threshold {threshold:.2f} (rails.{self.name.replace('-', '_')}.thresholds)" if flagged else "",
            attributes={**verdict.attributes, **extra, "threshold": threshold},
        )


def describe_tuning(thresholds: Mapping[RailPoint, float], allow: Sequence[str], *, band: tuple[float, float] | None = None) -> str:
    """One line for `flotilla validate` / `guard engines`: what a workflow changed, or ""."""
    parts = []
    if thresholds:
        parts.append("thresholds " + ", ".join(f"{RailPoint(p).value}={t:.2f}" for p, t in thresholds.items()))
    if allow:
        parts.append("allow-list " + ", ".join(repr(a) for a in allow))
    if band is not None:
        parts.append(f"Llama Guard decides scores in [{band[0]:.2f}, {band[1]:.2f})")
    return "; ".join(parts)
