"""The labelled PII sets measure what they claim to: every label is a well-formed value of its type.

A wrong label would make `python bench/bench_pii_recall.py` report a leak that is not one (a card
number failing Luhn is not a card number) or hide one (a name left unmarked)."""

from __future__ import annotations

import ipaddress
import re

import pytest

from tests.support.pii_set import SPLITS, load, parse, score

IBAN_LENGTHS = {"GB": 22, "DE": 22, "FR": 27, "NL": 18, "ES": 24, "IT": 27}


def luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def iban_valid(value: str) -> bool:
    raw = value.replace(" ", "")
    if len(raw) != IBAN_LENGTHS.get(raw[:2], -1):
        return False
    return int("".join(str(int(c, 36)) for c in raw[4:] + raw[:4])) % 97 == 1


def well_formed(entity: str, value: str) -> bool:
    if entity == "CREDIT_CARD":
        digits = re.sub(r"[ -]", "", value)
        return digits.isdigit() and len(digits) in (15, 16) and luhn(digits)
    if entity == "IBAN_CODE":
        return iban_valid(value)
    if entity == "US_SSN":
        area, group, serial = value.split("-")
        return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"
    if entity == "IP_ADDRESS":
        return bool(ipaddress.ip_address(value))
    if entity == "EMAIL_ADDRESS":
        return re.fullmatch(r"[^@\s]+@[^@\s]+\.[a-z]{2,}", value, re.I) is not None
    if entity == "PHONE_NUMBER":
        return sum(c.isdigit() for c in value) >= 7
    return entity == "PERSON" and value.strip() == value and any(c.isalpha() for c in value)


@pytest.mark.parametrize("split", SPLITS)
def test_every_label_is_a_well_formed_value_of_its_type(split: str) -> None:
    docs = load(split)
    labels = [(entity, doc.text[start:end]) for doc in docs for entity, start, end in doc.labels]
    assert len(docs) >= 60 and len(labels) >= 250
    bad = [(entity, value) for entity, value in labels if not well_formed(entity, value)]
    assert bad == []
    per_entity = {entity: sum(1 for e, _ in labels if e == entity) for entity, _ in labels}
    assert min(per_entity.values()) >= 20 and per_entity["PERSON"] >= 100, per_entity


def test_scoring_tells_redacted_partial_and_leaked_apart_and_counts_what_was_removed_wrongly() -> None:
    doc = parse('Dear [[PERSON:Maria Gonzalez]], call [[PHONE_NUMBER:020 7946 0321]] re INV-2024-00417.\n'
                '{"contact": "[[PERSON:Peter Pan]]", "ip": "[[IP_ADDRESS:203.0.113.9]]"}')
    assert doc.text.startswith("Dear Maria Gonzalez, call 020 7946 0321 re INV")
    # Re-serialised JSON loses the space after ":" — not a false positive; "<PERSON>" shares
    # letters with "Peter Pan" but a placeholder keeps nothing of the original.
    result = score(doc, 'Dear Maria <PERSON>, call <PHONE_NUMBER> re <PHONE_NUMBER>.\n{"contact":"<PERSON>", "ip": "203.0.113.9"}')
    assert list(result.outcome.values()) == ["partial", "redacted", "redacted", "leaked"]
    assert result.false_positives == ["INV-2024-00417"]


def test_the_audit_redaction_keeps_its_measured_recall_on_the_labelled_sets(presidio_rail) -> None:
    """Floors a little under what `python bench/bench_pii_recall.py` measured (README): a change that
    lets more PII through — a recognizer dropped, a shortcut that skips text — fails here."""
    from flotilla.guardrails.pii_batch import BatchRedactor

    docs = load("dev") + load("test")
    redacted = BatchRedactor(presidio_rail).redact_many([doc.text for doc in docs])
    outcomes: dict[str, list[str]] = {}
    false_positives = 0
    for doc, out in zip(docs, redacted):
        result = score(doc, out)
        false_positives += len(result.false_positives)
        for (entity, _, _), outcome in result.outcome.items():
            outcomes.setdefault(entity, []).append(outcome)
    recall = {entity: found.count("redacted") / len(found) for entity, found in outcomes.items()}
    floors = {"PERSON": 0.7, "PHONE_NUMBER": 0.85, "EMAIL_ADDRESS": 0.85, "CREDIT_CARD": 0.95, "IBAN_CODE": 0.95,
              "US_SSN": 0.95, "IP_ADDRESS": 0.95}
    assert {e: r for e, r in recall.items() if r < floors[e]} == {}, recall
    assert false_positives / sum(len(doc.text.split()) for doc in docs) < 0.015
