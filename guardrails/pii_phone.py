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
        seen = _Seen()  # what the eight regions' matchers share of this text
        for region in self.supported_regions:
            for match in _ShortCandidatesSkipped(text, region, leniency=self.leniency, seen=seen):
                result = self._get_recognizer_result(match, text, region, nlp_artifacts)
                if _grouped(match.raw_string, _region_read(match.raw_string, region)):
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
      a candidate that does verify is parsed again, with the library's look at the text around it.
      A candidate written with its country code after a plus reads the same in every region
      (`_region_read`): its verdict is remembered once, and its match found once per text.
    - Where the next candidate after an index is, and which numbers inside a candidate the library
      tries, do not depend on the region: they are found once per text (`_Seen`) and once per
      candidate (`_inner_groups`), and tried in the library's order, counted alike."""

    def __init__(self, text: str, region: str, seen: _Seen | None = None, **kwargs: Any) -> None:
        super().__init__(text, region, **kwargs)
        self._fewest = _fewest_digits(region) if self.leniency >= phonenumbers.Leniency.VALID else 0
        self._seen = seen if seen is not None else _Seen()

    def _find(self, index: int) -> Any:
        """The library's loop, its search for the next candidate shared by the text's regions."""
        if _PATTERN is None or _SECOND_NUMBER_START is None:
            return super()._find(index)
        found = self._candidate_at(index)
        while self._max_tries > 0 and found is not None:
            start, candidate = found
            if len(candidate) >= self._min_candidate_length:
                match = self._extract_match(candidate, start)
                if match is not None:
                    return match
                self._max_tries -= 1
            found = self._candidate_at(start + len(candidate))
        return None

    def _candidate_at(self, index: int) -> tuple[int, str] | None:
        if index not in self._seen.candidates:
            found = _PATTERN.search(self.text, index)  # type: ignore[union-attr]
            self._seen.candidates[index] = found and (found.start(), self._trim_after_first_match(_SECOND_NUMBER_START, found.group()))
        return self._seen.candidates[index]

    def _extract_match(self, candidate: str, offset: int) -> Any:
        if _digits_and_letters(candidate) < self._fewest:
            return None
        return super()._extract_match(candidate, offset)

    def _extract_inner_match(self, candidate: str, offset: int) -> Any:
        """The library's loop over the places an inner pattern matches, their groups found once."""
        if _INNER_MATCHES is None or _UNWANTED_END is None:
            return super()._extract_inner_match(candidate, offset)
        for groups in _inner_groups(candidate):
            if self._max_tries <= 0:
                return None
            for group, start in groups:
                match = self._parse_and_verify(group, offset + start)
                if match is not None:
                    return match
                self._max_tries -= 1
        return None

    def _parse_and_verify(self, candidate: str, offset: int) -> Any:
        if _digits_and_letters(candidate) < self._fewest:
            return None
        if self.leniency != phonenumbers.Leniency.VALID or _VERIFY is None:
            return super()._parse_and_verify(candidate, offset)
        region = _region_read(candidate, self.preferred_region)
        if not _is_valid_in(candidate, region):
            return None
        if region is not None:
            return super()._parse_and_verify(candidate, offset)
        if (candidate, offset) not in self._seen.matches:  # the same match in every region
            self._seen.matches[candidate, offset] = super()._parse_and_verify(candidate, offset)
        return self._seen.matches[candidate, offset]


class _Seen:
    """What the matchers of one text (at one leniency) share: its candidates, by the index their
    search starts at, and its matches that read the same in every region, by candidate and offset."""

    def __init__(self) -> None:
        self.candidates: dict[int, tuple[int, str] | None] = {}
        self.matches: dict[tuple[str, int], Any] = {}


_VERIFY = getattr(phonenumbermatcher, "_verify", None)
"""The matcher's own verification step (private: were it renamed, nothing is remembered)."""
_PATTERN = getattr(phonenumbermatcher, "_PATTERN", None)
_SECOND_NUMBER_START = getattr(phonenumbermatcher, "_SECOND_NUMBER_START_PATTERN", None)
_INNER_MATCHES = getattr(phonenumbermatcher, "_INNER_MATCHES", None)
_UNWANTED_END = getattr(phonenumbermatcher, "_UNWANTED_END_CHAR_PATTERN", None)
"""The matcher's candidate search, trimming and inner patterns (private: were they renamed, the
matcher's own `_find` and `_extract_inner_match` run)."""


@functools.lru_cache(maxsize=4_096)
def _inner_groups(candidate: str) -> tuple[tuple[tuple[str, int], ...], ...]:
    """Each place an inner pattern matches `candidate`, pattern by pattern, with the groups
    `PhoneNumberMatcher._extract_inner_match` tries there (at a pattern's first place, what comes
    before it too), trimmed, and where each starts in the candidate."""
    def trimmed(group: str) -> str:
        end = _UNWANTED_END.search(group)  # type: ignore[union-attr]
        return group[:end.start()] if end else group

    places: list[tuple[tuple[str, int], ...]] = []
    for pattern in _INNER_MATCHES:  # type: ignore[union-attr]
        found, first = pattern.search(candidate), True
        while found:
            group = (trimmed(found.group(1)), found.start(1))
            places.append(((trimmed(candidate[:found.start()]), 0), group) if first else (group,))
            found, first = pattern.search(candidate, found.start() + 1), False
    return tuple(places)


@functools.lru_cache(maxsize=4_096)
def _digits_and_letters(candidate: str) -> int:
    return sum(ch.isdigit() or ch.isalpha() for ch in candidate)


def _region_read(candidate: str, region: str) -> str | None:
    """The region `candidate` is parsed in: None when it parses with no region, which takes a plus
    and a country code after it. `phonenumbers.parse` reads the region for a number without
    them (its dialling prefix, its country code) and, when no country code follows the plus, for
    a dialling prefix there; with neither, it reads none. So such a candidate parses to the same
    number in every region, and the matcher's verdict on it (which the number decides) is the same."""
    return None if ("+" in candidate or "\uff0b" in candidate) and _parses_alone(candidate) else region


@functools.lru_cache(maxsize=4_096)
def _parses_alone(candidate: str) -> bool:
    try:
        phonenumbers.parse(candidate, None)
    except phonenumbers.NumberParseException:
        return False
    return True


@functools.lru_cache(maxsize=16_384)
def _is_valid_in(candidate: str, region: str | None) -> bool:
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
def _grouped(number: str, region: str | None) -> bool:
    """Whether `number` is all one STRICT_GROUPING match. Only the matcher's first try can span it
    all, so a number that reads the same in every region is asked once (`_region_read`)."""
    strict = phonenumbers.PhoneNumberMatcher(number, region, leniency=phonenumbers.Leniency.STRICT_GROUPING)
    return any(match.start == 0 and match.end == len(number) for match in strict)
