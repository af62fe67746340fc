"""The staged analysis (`guardrails/pii_staged.py`: the audit redactor's and the `presidio` rail's)
finds what Presidio's full batch analysis finds, text for text: same entities, same places, same
scores — its shortcuts skip work only."""

from __future__ import annotations

import pytest
from presidio_analyzer import BatchAnalyzerEngine

from flotilla.guardrails.pii import DEFAULT_PII_ENTITIES, PresidioRail, build_analyzer
from flotilla.guardrails.pii_batch import BatchRedactor
from flotilla.guardrails.pii_staged import StagedAnalyzer

SAMPLE_INVOICE_LINES = (
    "Northwind Office Supplies Ltd.\n14 Harbour Row, Leeds LS1 4DY, United Kingdom\nVAT GB 284 9931 06",
    "Invoice number: INV-2026-0412\nInvoice date:   2026-11-02\nDue date:       2026-12-02\nPurchase order: PO-7781",
    "Payment terms: net 30. Bank transfer to Northwind Office Supplies Ltd.,\nIBAN GB33 BUKB 2020 1555 5555 55, reference INV-2026-0412.\n"
    "Questions: billing@northwind-supplies.example, +44 113 496 0123.",
)
# Phone numbers with and without a context word before them, in the forms a lemma can take.
CORPUS = (
    *SAMPLE_INVOICE_LINES,
    "Call me on 212-555-0147 tomorrow.",
    "My number is (212) 555-0147, Maria Gonzalez.",
    "phoning +44 20 7946 0958 did not help",
    "She telephoned 030 901820 twice.",
    "Mobiles: 0151 496 0739 / 07700 900123",
    "cellphone 415.555.0132",
    "Reach the desk at 415-555-0132 or 212 555 0147.",  # well-written numbers, no context word: they count
    "Reference 415-5550-132 was paid on 2026-11-02.",  # a number only when regrouped: under the threshold
    "Order 2024-771203; phone: 415-5550-132",  # the same, one with a context word
    "The cancellation fee for 415-555-0132 is waived.",  # "cell" inside "cancellation": context by substring
    "SSN 078-05-1120 for John Smith; social security 219-09-9999.",
    "id 078051120 and 219099999 (no context)",
    "card 4111 1111 1111 1111, visa 4012-8888-8888-1881, not a card 1234 5678 9012 3456",
    "server 10.1.2.3, ip 192.168.0.17 and ipv6 2001:db8::8a2e:370:7334",
    "mail ann.lee@acme-corp.com or bob@example.co.uk; IBAN DE89370400440532013000",
    "Dear Ms. Okafor, your invoice from Priya Patel was approved by Lars Nilsson.",
    "john smith and wei zhang met in leeds",
    '{"vendor": "Gonzalez Office Supplies Ltd.", "invoice_number": "INV-2026-1000", "total": 2734.8, "tel": "+1 415 555 0132"}',
    "A4 copier paper, 80 gsm (box of 5)    40       24.50        980.00",
    "GBP",
    "2026-11-02",
    "nothing personal here at all",
    "You are an accounts-payable clerk. Copy values exactly as written. Dates as YYYY-MM-DD.",
    # Numbers near a context word and far from one, across lines and inside JSON.
    "Call us:\n212-555-0147\nor 415 555 0132",
    "Order number 1001\nItem 2 3 4\nItem 5 6 7\nItem 8 9 10\nQuestions: +44 113 496 0123\nDesk 212-555-0147",
    "phone\n1\n2\n3\n4\n5\n6\n7\n8\n9\n212-555-0147\nmobile\n07700 900123",
    "Ref 415-555-0132 12:30 10:45 11:15 09:00 08:30 07:15\ncall 212-555-0147\n(212) 555-0147 then 1 2 3 4 5 6 7 8 9 +1 415 555 0132",
    "number\n\n\n\n\n\n\n\n+44 20 7946 0958",
    '{"invoice_number": "INV-2026-1000", "date": "2026-11-02", "amount": 245.0, "qty": 10, "a": 1, "b": 2, "c": 3,'
    ' "tel": "+44 113 496 0123", "phone": "020 7946 0958", "x": "call(212) 555-0147", "y": "5551234call"}',
)


@pytest.fixture(scope="module")
def staged() -> StagedAnalyzer:
    """As the redaction worker builds it (BatchRedactor: parser disabled), on its own analyzer."""
    return BatchRedactor(PresidioRail())._staged


def _key(results) -> list[tuple[str, int, int, float]]:
    return sorted((r.entity_type, r.start, r.end, round(r.score, 6)) for r in results)


def test_the_staged_analysis_finds_what_the_full_analysis_finds(staged: StagedAnalyzer, presidio_rail: PresidioRail) -> None:
    assert staged.staged and presidio_rail._staged.staged  # the shortcut is on for the audit redactor and the rail
    full = BatchAnalyzerEngine(presidio_rail._analyzer).analyze_iterator(
        list(CORPUS), language="en", batch_size=64, entities=list(DEFAULT_PII_ENTITIES), score_threshold=0.5)
    got = staged.analyze(list(CORPUS))
    for text, want, have in zip(CORPUS, full, got):
        assert _key(have) == _key(want), text
    found = {r.entity_type for results in got for r in results}
    assert found == set(DEFAULT_PII_ENTITIES)  # the corpus exercises every entity, phone numbers included
    phones = [text for text, results in zip(CORPUS, got) if any(r.entity_type == "PHONE_NUMBER" for r in results)]
    assert {"phoning +44 20 7946 0958 did not help", "The cancellation fee for 415-555-0132 is waived."} <= set(phones)
    assert "Reach the desk at 415-555-0132 or 212 555 0147." in phones  # GroupedPhoneRecognizer
    assert "Reference 415-5550-132 was paid on 2026-11-02." not in phones
    assert "Order 2024-771203; phone: 415-5550-132" in phones


def test_staging_is_off_when_a_pipe_before_ner_sets_entities() -> None:
    analyzer = build_analyzer()
    ruler = analyzer.nlp_engine.nlp["en"].add_pipe("entity_ruler", before="ner")
    ruler.add_patterns([{"label": "PERSON", "pattern": "Zorblax"}])
    staged = StagedAnalyzer(analyzer, DEFAULT_PII_ENTITIES, 0.5)
    assert not staged.staged
    [found] = staged.analyze(["Ask Zorblax about invoice INV-2041."])
    assert [(r.entity_type, r.start, r.end) for r in found] == [("PERSON", 4, 11)]
