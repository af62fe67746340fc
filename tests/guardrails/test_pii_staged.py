"""The staged analysis (`guardrails/pii_staged.py`) finds what Presidio's full batch analysis
finds, text for text: same entities, same places, same scores — its shortcuts skip work only."""

from __future__ import annotations

import pytest
from presidio_analyzer import BatchAnalyzerEngine
from presidio_analyzer.predefined_recognizers import PhoneRecognizer

from flotilla.guardrails.pii import DEFAULT_PII_ENTITIES, PresidioRail, build_analyzer
from flotilla.guardrails.pii_batch import BatchRedactor
from flotilla.guardrails.pii_staged import StagedAnalyzer, context_stems

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
    "Reach the desk at 415-555-0132 or 212 555 0147.",  # numbers, no context word: found, under the threshold
    "Reference 415-555-0132 was paid on 2026-11-02.",
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
    # Lines a context word reaches, and lines it does not (the phone recognizer reads only the former).
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
    assert staged.staged and staged.phone_stems  # both shortcuts on for the default rail
    full = BatchAnalyzerEngine(presidio_rail._analyzer).analyze_iterator(
        list(CORPUS), language="en", batch_size=64, entities=list(DEFAULT_PII_ENTITIES), score_threshold=0.5)
    got = staged.analyze(list(CORPUS))
    for text, want, have in zip(CORPUS, full, got):
        assert _key(have) == _key(want), text
    found = {r.entity_type for results in got for r in results}
    assert found == set(DEFAULT_PII_ENTITIES)  # the corpus exercises every entity, phone numbers included
    phones = [text for text, results in zip(CORPUS, got) if any(r.entity_type == "PHONE_NUMBER" for r in results)]
    assert {"phoning +44 20 7946 0958 did not help", "The cancellation fee for 415-555-0132 is waived."} <= set(phones)
    assert "Reach the desk at 415-555-0132 or 212 555 0147." not in phones  # no context word: under the threshold


def test_a_text_the_phone_recognizer_is_skipped_on_has_no_phone_context_lemma(staged: StagedAnalyzer) -> None:
    """Whatever lemmas the full pipeline gives a text's tokens, a phone context word among them
    means the text is one the phone recognizer runs on."""
    nlp = staged.nlp
    words = ["phoning", "phoned", "Phones", "telephoning", "mobiles", "cellphones", "cells", "calls", "called", "recalled",
             "numbers", "numbering", "Numbered", "outnumbering", "cancellation", "mobilised", "iPhone", "CALLING"]
    context = PhoneRecognizer.CONTEXT
    for word in words:
        text = f"They were {word} 415-555-0132 yesterday."
        lemmas = [t.lemma_.lower() for t in nlp(text)]
        if any(w in lemma for lemma in lemmas for w in context):
            assert staged._phone_counts(text), (word, lemmas)
    exceptions = nlp.get_pipe("lemmatizer").lookups.get_table("lemma_exc")
    for table in exceptions.values():
        for surface, lemmas in table.items():
            if any(w in lemma.lower() for lemma in lemmas for w in context):
                assert staged._phone_counts(surface), surface


def test_context_stems_cover_the_suffixes_a_rule_lemma_adds() -> None:
    assert context_stems("phone", ["e", "y"]) == {"phone", "phon"}  # "phoning" → "phone"
    assert context_stems("call", ["e", "y", "f"]) == {"call"}
    assert context_stems("man", ["man"]) is None  # fits inside what a rule adds: nothing can be required


def test_the_phone_shortcut_is_off_where_a_phone_finding_counts_without_context(presidio_rail: PresidioRail) -> None:
    analyzer = presidio_rail._analyzer
    assert StagedAnalyzer(analyzer, DEFAULT_PII_ENTITIES, 0.3).phone_stems is None  # 0.4 passes a 0.3 threshold
    assert StagedAnalyzer(analyzer, ["PERSON", "EMAIL_ADDRESS"], 0.5).phone_stems is None  # no phone asked for
    custom = build_analyzer()
    custom.registry.remove_recognizer("PhoneRecognizer")

    class SurePhone(PhoneRecognizer):
        SCORE = 0.9

    custom.registry.add_recognizer(SurePhone())
    staged = StagedAnalyzer(custom, DEFAULT_PII_ENTITIES, 0.5)
    assert staged.phone_stems is None and staged._phone_counts("no context words here")
    [found] = staged.analyze(["Reach the desk at 415-555-0132."])
    assert [r.entity_type for r in found] == ["PHONE_NUMBER"]


def test_staging_is_off_when_a_pipe_before_ner_sets_entities() -> None:
    analyzer = build_analyzer()
    ruler = analyzer.nlp_engine.nlp["en"].add_pipe("entity_ruler", before="ner")
    ruler.add_patterns([{"label": "PERSON", "pattern": "Zorblax"}])
    staged = StagedAnalyzer(analyzer, DEFAULT_PII_ENTITIES, 0.5)
    assert not staged.staged
    [found] = staged.analyze(["Ask Zorblax about invoice INV-2041."])
    assert [(r.entity_type, r.start, r.end) for r in found] == [("PERSON", 4, 11)]


def test_the_phone_recognizer_reads_only_what_a_context_word_reaches(staged: StagedAnalyzer) -> None:
    text = "Invoice number: INV-1\nDate 2026-11-02\nA 1\nB 2\nC 3\nD 4\nE 5\nTel 0113 496 0123\nnet 30"
    read = staged._phone_text(text, staged.nlp.make_doc(text))
    assert len(read) == len(text) and read.count("\n") == text.count("\n")  # offsets kept
    # From "number" to the seventh digit-holding token after it (INV-1; 2026, 11, 02; 1, 2, 3) and on
    # to the line's end; "Tel" holds no stem, so its number is never read.
    assert [t.text for t in staged.nlp.make_doc("Date 2026-11-02")] == ["Date", "2026", "-", "11", "-", "02"]
    assert read.strip() == "number: INV-1\nDate 2026-11-02\nA 1\nB 2\nC 3"
    assert staged._phone_text("no context 212-555-0147", staged.nlp.make_doc("no context 212-555-0147")).strip() == ""
