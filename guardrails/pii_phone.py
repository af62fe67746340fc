"""Phone numbers for Presidio: counted without a context word when well written (`GroupedPhoneRecognizer`)."""

from __future__ import annotations

import functools
from typing import Any

import phonenumbers
from phonenumbers import phonenumbermatcher
from presidio_analyzer import EntityRecognizer, RecognizerResult
from presidio_analyzer.predefined_recognizers import PhoneRecognizer

__all__ = ["GroupedPhoneRecognizer"]


class GroupedPhoneRecognizer(PhoneRecognizer):
    """Presidio's phone recognizer, except that a valid number written as its country groups it
    ("+44 20 7946 0321", "(212) 555-0147", "07700 900123") or as one block of digits
    (libphonenumber's STRICT_GROUPING) counts without a context word. Presidio scores every
    number 0.4, under the 0.5 threshold, unless "phone", "call", … comes before it: on the
    labelled PII sets that let 69–83% of phone numbers through (`python bench/bench_pii_recall.py`).
    A number that parses only when its digits are regrouped ("2024-771203", "415-5550-132": order
    and reference numbers) stays at 0.4 and still needs the context word.

    A well-written number scores what Presidio gives a number with its context word (0.4 + 0.35),
    marked as enhanced already: context would add nothing, and the lemmas are not needed for it."""

    GROUPED_SCORE = 0.75

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[RecognizerResult]:
        results = []
        for region in self.supported_regions:
            for match in _ShortCandidatesSkipped(text, region, leniency=self.leniency):
                result = self._get_recognizer_result(match, text, region, nlp_artifacts)
                if _grouped(match.raw_string, region):
                    result.score = self.GROUPED_SCORE
                    result.recognition_metadata[RecognizerResult.IS_SCORE_ENHANCED_BY_CONTEXT_KEY] = True
                results.append(result)
        return EntityRecognizer.remove_duplicates(results)


class _ShortCandidatesSkipped(phonenumbers.PhoneNumberMatcher):
    """libphonenumber's matcher, parsing less; parsing is most of the redaction's phone work
    (`python bench/bench_redaction.py`). Same matches (tests/guardrails/test_pii.py); were the
    library's hook renamed, nothing would be skipped.

    - A candidate with fewer digits than any valid number it could hold is not parsed: an amount
      such as "24.50" is parsed for each of eight regions otherwise. A number found in region R
      carries a country code (then at least the fewest digits of any country code and national
      number together) or is one of the regions sharing R's code (then at least its shortest
      national length); letters count, as a vanity number's do. Nor is such a candidate searched
      for numbers inside it (its parts have fewer still). The library counts those inner tries
      against its limit of tries per text (65,535), so a text that reaches it here has more of
      its numbers found, never fewer.
    - Whether a candidate parses and verifies in a region depends on the candidate alone (at
      VALID leniency, Presidio's), so it is remembered (`_is_valid_in`): the same dates, amounts
      and references come back in a run's prompts, answers and tool calls, and across runs. Only
      a candidate that does verify is parsed again, with the library's look at the text around it."""

    def __init__(self, text: str, region: str, **kwargs: Any) -> None:
        super().__init__(text, region, **kwargs)
        self._fewest = _fewest_digits(region) if self.leniency >= phonenumbers.Leniency.VALID else 0

    def _extract_match(self, candidate: str, offset: int) -> Any:
        if _digits_and_letters(candidate) < self._fewest:
            return None
        return super()._extract_match(candidate, offset)

    def _parse_and_verify(self, candidate: str, offset: int) -> Any:
        if _digits_and_letters(candidate) < self._fewest:
            return None
        remembered = self.leniency == phonenumbers.Leniency.VALID and _VERIFY is not None
        if remembered and not _is_valid_in(candidate, self.preferred_region):
            return None
        return super()._parse_and_verify(candidate, offset)


_VERIFY = getattr(phonenumbermatcher, "_verify", None)
"""The matcher's own verification step (private: were it renamed, nothing is remembered)."""


def _digits_and_letters(candidate: str) -> int:
    return sum(ch.isdigit() or ch.isalpha() for ch in candidate)


@functools.lru_cache(maxsize=16_384)
def _is_valid_in(candidate: str, region: str) -> bool:
    """What libphonenumber's matcher decides of `candidate` in `region` at VALID leniency, its
    look at the surrounding text aside (which can only turn a number down)."""
    try:
        number = phonenumbers.parse(candidate, region, keep_raw_input=True)
    except phonenumbers.NumberParseException:
        return False
    return bool(_VERIFY(phonenumbers.Leniency.VALID, number, candidate, None))  # type: ignore[misc]


def _shortest(region: str) -> int:
    lengths = phonenumbers.PhoneMetadata.metadata_for_region(region).general_desc.possible_length
    return min(lengths) if lengths else 1


@functools.cache
def _fewest_digits(region: str) -> int:
    international = min(len(str(phonenumbers.country_code_for_region(r))) + _shortest(r) for r in phonenumbers.SUPPORTED_REGIONS)
    sharing = phonenumbers.region_codes_for_country_code(phonenumbers.country_code_for_region(region)) or (region,)
    return min(international, *(_shortest(r) for r in sharing))


@functools.lru_cache(maxsize=4_096)
def _grouped(number: str, region: str) -> bool:
    strict = phonenumbers.PhoneNumberMatcher(number, region, leniency=phonenumbers.Leniency.STRICT_GROUPING)
    return any(match.start == 0 and match.end == len(number) for match in strict)
