"""Names that business text announces, which spaCy's small model misses (`AnnouncedNameRecognizer`).

On the labelled PII sets (`python bench/bench_pii_recall.py`) spaCy's NER let about a third of
names through, most of them where the text itself says a person follows: after a label such as
"Approver:" or "Line manager:", after a greeting ("Hi Tyler,") or a title ("Mr Okafor"). This
recognizer reads those places: one to four capitalised words (name particles such as "de" or
"van" between them) right after the cue, never one that names a company, team or role
(`NOT_NAMES`); a label of several people ("Present:") takes a list. Lower-case names in chat
stay with NER (which mostly misses them).

`is_person_field` does the same for JSON: a value is a name when its field says it holds a person
("contact_person", "lastName", "attendees", or "name" inside "customer") and it is name-shaped.
"""

from __future__ import annotations

import re
from typing import Any

from presidio_analyzer import LocalRecognizer, RecognizerResult

__all__ = ["AnnouncedNameRecognizer", "is_person_field", "names_a_person", "is_name_shaped"]

PERSON_LABELS = (
    "name", "full name", "employee", "customer", "contact", "contact person", "approver", "approved by", "requester",
    "requested by", "agent", "caller", "guest", "patient", "candidate", "applicant", "manager", "line manager",
    "account manager", "owner", "assignee", "reporter", "attn", "attention", "buddy", "driver", "lead", "project lead",
    "team lead", "incident commander", "signed", "signed by", "prepared by", "reviewed by", "submitted by", "raised by",
    "passenger", "traveller", "traveler", "payee", "account holder", "cardholder", "beneficiary", "tenant", "author",
    "technician", "employee name", "claimant", "supervisor", "recipient", "sender", "host", "interviewer", "mentor",
)
LIST_LABELS = ("present", "attendees", "participants", "cc", "invited", "apologies")
GREETINGS = ("hi", "hello", "hey", "dear", "thanks", "thank you", "cheers", "morning", "good morning", "good afternoon")
TITLES = ("Mr", "Mrs", "Ms", "Miss", "Mx", "Dr", "Prof", "Herr", "Frau", "Mme", "Mlle", "Sr", "Sra")
PARTICLES = frozenset({"de", "da", "di", "van", "der", "den", "von", "la", "le", "du", "dos", "das", "del", "bin", "al", "el", "ter"})
NOT_NAMES = frozenset(
    "team all everyone there folks guys customer customers sir madam colleagues again both none n/a tbd unknown "
    "accounts payable receivable finance support service services sales operations hr it legal procurement "
    "department office desk help helpdesk group ltd limited inc llc gmbh plc corp co company bank hotel "
    "traders supplies solutions systems partners holdings international the a an for and of team's "
    "manager director officer engineer admin administrator user users client clients vendor supplier".split()
)

_LABEL = re.compile(r"(?i)\b(?P<label>" + "|".join(re.escape(x) for x in sorted(PERSON_LABELS + LIST_LABELS, key=len, reverse=True))
                    + r")[ \t]*[:(][ \t]*")
_BY = re.compile(r"(?i)\b(?:approved|requested|submitted|raised|signed|prepared|reviewed|authori[sz]ed|written|sent) by[ \t]+"
                 r"|\b(?:attn\.?|attention|c/o|for the attention of)[ \t]*:?[ \t]+")
_GREETING = re.compile(r"(?im)(?:^|[.!?]\s+)(?:" + "|".join(re.escape(g) for g in GREETINGS) + r")\b,?[ \t]+")
_TITLE = re.compile(r"\b(?:" + "|".join(TITLES) + r")\.?[ \t]+")
_WORD = re.compile(r"[^\W\d_][^\W\d_'’\-]*")
_KEY_WORDS = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])")
NAME_FIELDS = frozenset({"first name", "last name", "full name", "given name", "family name", "surname", "forename", "middle name"})
_LIST_JOIN = re.compile(r"\s*(?:,|/|&|\band\b)\s*")


class AnnouncedNameRecognizer(LocalRecognizer):
    """PERSON where a label, greeting or title announces a name; scored 0.6, no context list."""

    SCORE = 0.6

    def __init__(self) -> None:
        super().__init__(supported_entities=["PERSON"], supported_language="en", name="AnnouncedNameRecognizer")

    def load(self) -> None:
        pass

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[RecognizerResult]:
        spans: list[tuple[int, int]] = []
        for cue in _LABEL.finditer(text):
            many = cue.group("label").lower() in LIST_LABELS
            spans += _names_at(text, cue.end(), many=many)
        for cue in (*_BY.finditer(text), *_GREETING.finditer(text), *_TITLE.finditer(text)):
            spans += _names_at(text, cue.end(), many=False)
        return [RecognizerResult("PERSON", start, end, self.SCORE,
                                 recognition_metadata={RecognizerResult.RECOGNIZER_NAME_KEY: self.name,
                                                       RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id})
                for start, end in sorted(set(spans))]


def _names_at(text: str, at: int, *, many: bool) -> list[tuple[int, int]]:
    """The name (or, `many`, the list of names) starting exactly at `at`, as (start, end) spans."""
    found = []
    while True:
        span = _name_at(text, at)
        if span is None:
            return found
        found.append(span)
        join = _LIST_JOIN.match(text, span[1])
        if not many or join is None or "\n" in join.group():
            return found
        at = join.end()


def _name_at(text: str, at: int) -> tuple[int, int] | None:
    words: list[re.Match[str]] = []
    pos = at
    while len(words) < 4:
        word = _WORD.match(text, pos)
        if word is None:
            break
        token = word.group()
        if token[0].isupper() and not token.isupper() and token.lower() not in NOT_NAMES:  # "I", "CFO": not names
            words.append(word)
        elif not (words and token in PARTICLES):
            break
        gap = re.match(r"[ \t]", text[word.end(): word.end() + 1])
        if gap is None:
            break
        pos = word.end() + 1
    if not words:
        return None
    following = _WORD.match(text, words[-1].end() + 1)
    if following is not None and following.group()[0].isupper() and following.group().lower() in NOT_NAMES:
        return None  # "Contoso Support Team": a team, not a person
    return words[0].start(), words[-1].end()


def names_a_person(key: str, parent: str | None = None) -> bool:
    """True when a JSON field called `key` (inside one called `parent`) holds a person's name:
    "contact_person", "lastName", "attendees"; a bare "name" only inside a person ("customer")."""
    label = " ".join(word.lower() for word in _KEY_WORDS.findall(key))
    if label in NAME_FIELDS or (label in PERSON_LABELS and label != "name") or label in LIST_LABELS:
        return True
    return label == "name" and parent is not None and names_a_person(parent)


def is_name_shaped(value: str) -> bool:
    """The whole of `value` is one name as the recognizer reads it ("Franziska Braun", "Mendoza")."""
    text = value.strip()
    return bool(text) and _name_at(text, 0) == (0, len(text))


def is_person_field(value: str, key: str | None, parent: str | None) -> bool:
    """A JSON string value that is a person's name by its field (`names_a_person`) and its shape."""
    return key is not None and names_a_person(key, parent) and is_name_shaped(value)
