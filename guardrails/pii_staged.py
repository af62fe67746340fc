"""Presidio's findings for a batch of texts, the ones `BatchAnalyzerEngine` gives, for less CPU.

One shortcut, exact — every text gets the findings the full analysis returns, no fewer:
**spaCy runs in two stages.** NER (with its own embedding layer: no other pipe feeds it; decoded
by `GreedyNER`, spaCy's greedy parse batched in numpy) runs on every text, and the recognizers
(which read the text and NER's entities, never lemmas) run once on that. Tagger, attribute ruler
and lemmatizer, whose only use here is the lemmas Presidio's context enhancer reads, complete the
doc only where a finding's score could move with context (a finding with a context list, under
the 1.0 ceiling, not under the threshold either way);
elsewhere the enhancer would change nothing, and Presidio's last steps (context, threshold,
duplicates: `_kept`) run on what the first stage has.

The shortcut switches itself off when the pipeline is not the shape this reasoning rests on
(`staged`), and the analysis is then the full one. (An earlier second shortcut ran the phone
recognizer only where a context word could lift its 0.4 over the threshold; since
`pii_phone.GroupedPhoneRecognizer` counts well-written numbers without one, every text needs it.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from presidio_analyzer import AnalyzerEngine, EntityRecognizer, RecognizerResult
from presidio_analyzer.context_aware_enhancers import ContextAwareEnhancer, LemmaContextAwareEnhancer

from flotilla.guardrails.ner_greedy import GreedyNER

__all__ = ["StagedAnalyzer"]

LANGUAGE = "en"
LEMMA_PIPES = frozenset({"tok2vec", "tagger", "morphologizer", "senter", "parser", "attribute_ruler", "lemmatizer"})
"""The pipes that may come before NER in a staged pipeline: none of them sets entities."""
Raw = tuple[list[EntityRecognizer], list[tuple[EntityRecognizer, RecognizerResult]]]
"""The recognizers asked, and (recognizer, finding) for each raw finding."""


class StagedAnalyzer:
    """`analyze(texts)` → per text, the findings `BatchAnalyzerEngine.analyze_iterator` returns."""

    def __init__(self, analyzer: AnalyzerEngine, entities: Sequence[str], score_threshold: float, *, batch_size: int = 64) -> None:
        self.analyzer = analyzer
        self.entities = list(entities)
        self.score_threshold = score_threshold
        self.batch_size = batch_size
        self.nlp = analyzer.nlp_engine.nlp[LANGUAGE]  # type: ignore[attr-defined]
        self.staged = self._stageable()
        self.ner = GreedyNER(self.nlp.get_pipe("ner"), batch_size=batch_size) if self.staged else None

    def analyze(self, texts: Sequence[str]) -> list[list[RecognizerResult]]:
        if not self.staged:
            docs = list(self.nlp.pipe(texts, batch_size=self.batch_size))
            return [self._findings(text, self._artifacts(doc)) for text, doc in zip(texts, docs)]
        assert self.ner is not None
        docs = list(self.ner.pipe(self.nlp.make_doc(text) for text in texts))
        out: list[list[RecognizerResult]] = [[] for _ in texts]
        complete: list[tuple[int, Raw]] = []  # texts whose findings the lemmas may change
        for i, (text, doc) in enumerate(zip(texts, docs)):
            artifacts = self._artifacts(doc)
            raw = self._raw(text, artifacts)
            if not raw[1]:
                continue  # nothing found: nothing the context could raise
            by_id = {recognizer.id: recognizer for recognizer in raw[0]}  # as the enhancer finds a finding's recognizer
            if all(self._context_cannot_change(by_id.get(result.recognition_metadata[RecognizerResult.RECOGNIZER_IDENTIFIER_KEY]), result)
                   for _, result in raw[1]):
                out[i] = self._kept(text, raw, artifacts)
            else:
                complete.append((i, raw))
        done = [docs[i] for i, _ in complete]
        for name, proc in self.nlp.pipeline:
            if name != "ner":
                done = list(proc.pipe(done, batch_size=self.batch_size)) if hasattr(proc, "pipe") else [proc(d) for d in done]
        for (i, raw), doc in zip(complete, done):
            out[i] = self._kept(texts[i], raw, self._artifacts(doc))
        return out

    def _artifacts(self, doc: Any) -> Any:
        return self.analyzer.nlp_engine._doc_to_nlp_artifact(doc, LANGUAGE)  # type: ignore[attr-defined]

    def _findings(self, text: str, artifacts: Any) -> list[RecognizerResult]:
        return self.analyzer.analyze(text=text, language=LANGUAGE, entities=self.entities,
                                     score_threshold=self.score_threshold, nlp_artifacts=artifacts)

    def _raw(self, text: str, artifacts: Any) -> Raw:
        """(recognizers, what each finds before context, scores and duplicates): `AnalyzerEngine.analyze`'s first
        loop. Recognizers read the text and the entities (NER's, the same in both stages), never the lemmas."""
        recognizers = self.analyzer.registry.get_recognizers(language=LANGUAGE, entities=self.entities)
        found: list[tuple[EntityRecognizer, RecognizerResult]] = []
        for recognizer in recognizers:
            if not recognizer.is_loaded:
                recognizer.load()
                recognizer.is_loaded = True
            for result in recognizer.analyze(text=text, entities=self.entities, nlp_artifacts=artifacts) or ():
                metadata = result.recognition_metadata if result.recognition_metadata is not None else {}
                metadata.setdefault(RecognizerResult.RECOGNIZER_IDENTIFIER_KEY, recognizer.id)
                metadata.setdefault(RecognizerResult.RECOGNIZER_NAME_KEY, recognizer.name)
                result.recognition_metadata = metadata
                found.append((recognizer, result))
        return recognizers, found

    def _kept(self, text: str, raw: Raw, artifacts: Any) -> list[RecognizerResult]:
        """`AnalyzerEngine.analyze`'s tail over raw findings: context, the score threshold, then duplicates."""
        recognizers, found = raw
        results = self.analyzer._enhance_using_context(text, [r for _, r in found], artifacts, recognizers, None)
        return EntityRecognizer.remove_duplicates([r for r in results if r.score >= self.score_threshold])

    def _context_cannot_change(self, recognizer: EntityRecognizer | None, result: RecognizerResult) -> bool:
        """True when context words could not change whether, or with what score, `result` is kept."""
        if recognizer is None:
            return True  # no selected recognizer owns it: Presidio's context step drops it in either stage
        if result.recognition_metadata.get(RecognizerResult.IS_SCORE_ENHANCED_BY_CONTEXT_KEY):
            return True  # scored with its context already: the enhancer skips it
        if type(recognizer).enhance_using_context is not EntityRecognizer.enhance_using_context:
            return False  # a recognizer with its own context logic
        if not recognizer.context or result.score >= ContextAwareEnhancer.MAX_SCORE:
            return True  # the enhancer skips it, or it is at the ceiling already
        enhancer = self.analyzer.context_aware_enhancer
        if not isinstance(enhancer, LemmaContextAwareEnhancer):
            return False
        boosted = min(max(result.score + enhancer.context_similarity_factor, enhancer.min_score_with_context_similarity), ContextAwareEnhancer.MAX_SCORE)
        return result.score < self.score_threshold and boosted < self.score_threshold  # dropped either way

    def _stageable(self) -> bool:
        """NER last in the pipeline, after pipes that set no entities, and fed by none (no shared tok2vec)."""
        names = self.nlp.pipe_names
        if not names or names[-1] != "ner" or not set(names[:-1]) <= LEMMA_PIPES:
            return False  # e.g. an entity ruler, whose entities NER keeps, or a transformer
        for name, proc in self.nlp.pipeline:
            if "ner" in getattr(proc, "listening_components", ()):
                return False
        return True
