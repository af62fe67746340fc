"""Presidio's findings for a batch of texts, the ones `BatchAnalyzerEngine` gives, for less CPU.

Two shortcuts, each exact — every text gets the findings the full analysis returns, no fewer:

- **The phone recognizer runs only on text holding a phone context word.** It scores each number
  it finds 0.4, under the 0.5 threshold, unless Presidio's context enhancer sees one of its
  context words ("phone", "number", "call", …) among the lemmas before it. A text with none of
  them in any form a lemma can come from (`context_stems`) cannot have a phone finding over the
  threshold; libphonenumber parsing every digit run for eight regions — half of the redaction
  CPU of an invoice — is skipped. Findings under the threshold are dropped before anything else
  looks at them (`AnalyzerEngine.analyze`), so leaving them out changes nothing. Within such a
  text it reads only the stretches a context word can reach (`_phone_text`): Presidio's enhancer
  looks back from a finding over its own token and 5 keywords, a token holding a digit is always
  a keyword, and a phone number never holds a line break or a double quote; the rest is blanked.
- **spaCy runs in two stages.** NER (with its own embedding layer: no other pipe feeds it) runs on
  every text, and the recognizers (which read the text and NER's entities, never lemmas) run
  once on that. Tagger, attribute ruler and lemmatizer, whose only use here is the lemmas the
  context enhancer reads, complete the doc only where a finding's score could move with context
  (a finding with a context list, under the 1.0 ceiling, not under the threshold either way);
  elsewhere the enhancer would change nothing, and Presidio's last steps (context, threshold,
  duplicates: `_kept`) run on what the first stage has.

Either shortcut switches itself off when the pipeline or the recognizers are not the shape this
reasoning rests on (`staged`, `phone_stems`), and the analysis is then the full one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from presidio_analyzer import AnalyzerEngine, EntityRecognizer, RecognizerResult
from presidio_analyzer.context_aware_enhancers import ContextAwareEnhancer, LemmaContextAwareEnhancer
from presidio_analyzer.predefined_recognizers import PhoneRecognizer, SpacyRecognizer

__all__ = ["StagedAnalyzer", "context_stems"]

PHONE = "PHONE_NUMBER"
_BLANK = re.compile(r"[^\n]")
LANGUAGE = "en"
LEMMA_PIPES = frozenset({"tok2vec", "tagger", "morphologizer", "senter", "parser", "attribute_ruler", "lemmatizer"})
"""The pipes that may come before NER in a staged pipeline: none of them sets entities."""
Raw = tuple[list[EntityRecognizer], list[tuple[EntityRecognizer, RecognizerResult]]]
"""The recognizers asked, and (recognizer, finding) for each raw finding."""


def context_stems(word: str, added_suffixes: Sequence[str]) -> set[str] | None:
    """What a text must contain (lower-cased) for a lemma of one of its tokens to contain `word`.

    A rule lemma is the lower-cased token minus a suffix plus one of `added_suffixes`, so `word`
    lies in the kept part (the text holds `word`) or straddles into the added one ("phoning" →
    "phone": the text holds "phon"). None when no substring can be required (the word fits
    inside an added suffix)."""
    word = word.lower()
    stems = {word}
    for added in added_suffixes:
        if word in added:
            return None
        for k in range(1, len(added) + 1):
            if word.endswith(added[:k]):
                if len(word) == k:
                    return None
                stems.add(word[:-k])
    return stems


class StagedAnalyzer:
    """`analyze(texts)` → per text, the findings `BatchAnalyzerEngine.analyze_iterator` returns."""

    def __init__(self, analyzer: AnalyzerEngine, entities: Sequence[str], score_threshold: float, *, batch_size: int = 64) -> None:
        self.analyzer = analyzer
        self.entities = list(entities)
        self.without_phone = [e for e in self.entities if e != PHONE]
        self.score_threshold = score_threshold
        self.batch_size = batch_size
        self.nlp = analyzer.nlp_engine.nlp[LANGUAGE]  # type: ignore[attr-defined]
        self.staged = self._stageable()
        self.phone_stems = self._phone_stems()
        """Substrings (lower-case) one of which a text must hold for its phone findings to count; None: always run."""

    def analyze(self, texts: Sequence[str]) -> list[list[RecognizerResult]]:
        if not self.staged:
            docs = list(self.nlp.pipe(texts, batch_size=self.batch_size))
            return [self._findings(text, self._artifacts(doc)) for text, doc in zip(texts, docs)]
        ner = self.nlp.get_pipe("ner")
        docs = list(ner.pipe((self.nlp.make_doc(text) for text in texts), batch_size=self.batch_size))
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

    def _entities(self, text: str) -> list[str]:
        return self.entities if self._phone_counts(text) else self.without_phone

    def _findings(self, text: str, artifacts: Any) -> list[RecognizerResult]:
        return self.analyzer.analyze(text=text, language=LANGUAGE, entities=self._entities(text),
                                     score_threshold=self.score_threshold, nlp_artifacts=artifacts)

    def _raw(self, text: str, artifacts: Any) -> Raw:
        """(recognizers, what each finds before context, scores and duplicates): `AnalyzerEngine.analyze`'s first
        loop. Recognizers read the text and the entities (NER's, the same in both stages), never the lemmas."""
        entities = self._entities(text)
        recognizers = self.analyzer.registry.get_recognizers(language=LANGUAGE, entities=entities)
        found: list[tuple[EntityRecognizer, RecognizerResult]] = []
        for recognizer in recognizers:
            if not recognizer.is_loaded:
                recognizer.load()
                recognizer.is_loaded = True
            read = self._phone_text(text, artifacts.tokens) if type(recognizer) is PhoneRecognizer else text
            for result in recognizer.analyze(text=read, entities=entities, nlp_artifacts=artifacts) or ():
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
        if type(recognizer).enhance_using_context is not EntityRecognizer.enhance_using_context:
            return False  # a recognizer with its own context logic
        if not recognizer.context or result.score >= ContextAwareEnhancer.MAX_SCORE:
            return True  # the enhancer skips it, or it is at the ceiling already
        enhancer = self.analyzer.context_aware_enhancer
        if not isinstance(enhancer, LemmaContextAwareEnhancer):
            return False
        boosted = min(max(result.score + enhancer.context_similarity_factor, enhancer.min_score_with_context_similarity), ContextAwareEnhancer.MAX_SCORE)
        return result.score < self.score_threshold and boosted < self.score_threshold  # dropped either way

    def _phone_text(self, text: str, tokens: Any) -> str:
        """`text` with every stretch blanked (same length, offsets kept) where no phone finding can
        have a context word within the enhancer's reach; the text itself when that cannot be told.

        The enhancer (suffix count 0) reads a finding's token and the `prefix` keywords before it.
        A token holding a digit (and no ":", on which Presidio splits keywords) has a lemma holding
        it, so it is always a keyword: past `prefix + 1` of them after a context token, that token
        is out of reach (+1 more for margin). A stretch kept starts at a context token (letters: no
        number starts there) and runs on to a character no phone number can hold (a line break or
        a double quote), kept too, so the matcher sees each candidate and its neighbours as in `text`."""
        enhancer = self.analyzer.context_aware_enhancer
        if self.phone_stems is None or getattr(enhancer, "context_suffix_count", None) != 0:
            return text
        reach = int(enhancer.context_prefix_count) + 2
        kept: list[tuple[int, int]] = []
        for i, token in enumerate(tokens):
            if not any(stem in token.lower_ for stem in self.phone_stems):
                continue
            end, seen = len(text), 0
            for later in tokens[i + 1:]:
                seen += any(ch.isdigit() for ch in later.text) and ":" not in later.text
                if seen == reach:
                    end = later.idx + len(later.text)
                    break
            breaks = [found for found in (text.find("\n", end), text.find('"', end)) if found >= 0]
            kept.append((token.idx, min(breaks) + 1 if breaks else len(text)))
        out, at = [], 0
        for begin, end in sorted(kept):
            if begin > at:
                out.append(_BLANK.sub(" ", text[at:begin]))
            if end > at:
                out.append(text[max(begin, at):end])
                at = end
        out.append(_BLANK.sub(" ", text[at:]))
        return "".join(out)

    def _phone_counts(self, text: str) -> bool:
        if self.phone_stems is None:
            return PHONE in self.entities
        lowered = text.lower()
        return any(stem in lowered for stem in self.phone_stems)

    def _stageable(self) -> bool:
        """NER last in the pipeline, after pipes that set no entities, and fed by none (no shared tok2vec)."""
        names = self.nlp.pipe_names
        if not names or names[-1] != "ner" or not set(names[:-1]) <= LEMMA_PIPES:
            return False  # e.g. an entity ruler, whose entities NER keeps, or a transformer
        for name, proc in self.nlp.pipeline:
            if "ner" in getattr(proc, "listening_components", ()):
                return False
        return True

    def _phone_stems(self) -> set[str] | None:
        if PHONE not in self.entities or not isinstance(self.analyzer.context_aware_enhancer, LemmaContextAwareEnhancer):
            return None
        enhancer = self.analyzer.context_aware_enhancer
        recognizers = self.analyzer.registry.get_recognizers(language=LANGUAGE, entities=self.entities)
        words: list[str] = []
        for recognizer in recognizers:
            if PHONE not in recognizer.supported_entities:
                continue
            if isinstance(recognizer, SpacyRecognizer):
                if self._ner_can_say_phone():
                    return None
                continue
            if type(recognizer) is not PhoneRecognizer or recognizer.SCORE >= self.score_threshold:
                return None  # another phone recognizer, or one whose findings count without context
            if recognizer.SCORE + enhancer.context_similarity_factor < self.score_threshold and \
                    enhancer.min_score_with_context_similarity < self.score_threshold:
                continue  # even with context under the threshold: never counts
            words += list(recognizer.context or ())
        return self._lemma_sources(words)

    def _ner_can_say_phone(self) -> bool:
        mapping = getattr(self.analyzer.nlp_engine, "ner_model_configuration", None)
        table = getattr(mapping, "model_to_presidio_entity_mapping", None)
        if "ner" not in self.nlp.pipe_names or table is None:
            return True
        return any(table.get(label) == PHONE for label in self.nlp.get_pipe("ner").labels)

    def _lemma_sources(self, words: list[str]) -> set[str] | None:
        """Stems of `words` under the lemmatizer's rules, plus the exceptions whose lemma holds one
        of them; None when the lemmas cannot be reasoned about (not spaCy's rule lemmatizer)."""
        if "lemmatizer" not in self.nlp.pipe_names or getattr(self.nlp.get_pipe("lemmatizer"), "mode", "") != "rule":
            return None
        lookups = self.nlp.get_pipe("lemmatizer").lookups
        added = sorted({new for rules in lookups.get_table("lemma_rules", {}).values() for _, new in rules if new})
        stems: set[str] = set()
        for word in words:
            found = context_stems(word, added)
            if found is None:
                return None
            stems |= found
        for table in lookups.get_table("lemma_exc", {}).values():
            for surface, lemmas in table.items():
                if any(w.lower() in lemma.lower() for lemma in lemmas for w in words) and not any(s in surface.lower() for s in stems):
                    stems.add(surface.lower())
        if "attribute_ruler" in self.nlp.pipe_names:
            for pattern in self.nlp.get_pipe("attribute_ruler").patterns:
                lemma = str(pattern["attrs"].get("LEMMA", ""))
                if any(w.lower() in lemma.lower() for w in words):
                    return None  # a lemma set by token pattern: not worth reasoning about
        return {s for s in stems if s}
