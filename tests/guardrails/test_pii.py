import json

from flotilla.guardrails import Guardrails
from flotilla.guardrails.base import RailPoint, own_messages
from flotilla.guardrails.pii import PresidioRail


def test_redacts_obvious_pii(presidio_rail: PresidioRail) -> None:
    text = "Contact john.smith@acme-corp.com, card 4111 1111 1111 1111, IBAN DE89370400440532013000."
    verdict = presidio_rail.check_sync(text, point=RailPoint.INPUT)
    assert verdict.allowed and verdict.text is not None
    assert "john.smith@acme-corp.com" not in verdict.text and "<EMAIL>" in verdict.text
    assert "4111" not in verdict.text and "<CREDIT_CARD>" in verdict.text
    assert "DE89370400440532013000" not in verdict.text
    assert {"EMAIL_ADDRESS", "CREDIT_CARD", "IBAN_CODE"} <= set(verdict.attributes["entities"])


def test_clean_text_is_untouched(presidio_rail: PresidioRail) -> None:
    verdict = presidio_rail.check_sync("Summarise invoice INV-2041 for the finance team.", point=RailPoint.INPUT)
    assert verdict.allowed and verdict.text is None and verdict.attributes["entities"] == []


def test_entities_are_configurable(presidio_rail: PresidioRail) -> None:
    only_cards = PresidioRail(entities=["CREDIT_CARD"], analyzer=presidio_rail._analyzer)
    verdict = only_cards.check_sync("mail a@example.org, card 4111 1111 1111 1111", point=RailPoint.OUTPUT)
    assert verdict.text == "mail a@example.org, card <CREDIT_CARD>"


def test_json_stays_valid_json(presidio_rail: PresidioRail) -> None:
    import json

    text = json.dumps({"note": 'Mail "Ann" at ann@acme-corp.com', "total": 12.5, "lines": ["card 4111 1111 1111 1111"]})
    verdict = presidio_rail.check_sync(text, point=RailPoint.OUTPUT)
    data = json.loads(verdict.text)
    assert data["total"] == 12.5 and "<EMAIL>" in data["note"] and data["lines"] == ["card <CREDIT_CARD>"]


async def test_flotillas_own_messages_survive_redaction_and_what_surrounds_them_does_not(engine_factory) -> None:
    """A research report repeats failed steps' errors (`gaps`); the output rail must not read
    "Invalid JSON" as a person's name, and must still redact the question around it."""
    error = "agent 'documents': the model's output does not match Answer after one repair: reply: Invalid JSON: EOF while parsing a string at line 1 column 40"
    output = json.dumps({"gaps": [f"q1 (Did jane.doe@example.com ask us to change the IBAN?): {error}"]})
    rails = Guardrails({"presidio": {"points": ["output"]}}, factory=engine_factory)
    with own_messages([error]):
        [gap] = json.loads(await rails.check(RailPoint.OUTPUT, output))["gaps"]
    assert gap == f"q1 (Did <EMAIL> ask us to change the IBAN?): {error}"
    [mangled] = json.loads(await rails.check(RailPoint.OUTPUT, output))["gaps"]  # what it did before
    assert error not in mangled


def test_a_well_written_phone_number_is_redacted_without_a_context_word(presidio_rail: PresidioRail) -> None:
    text = "Reach the desk at (212) 555-0147, Berlin +49 30 901820 or 0161 496 0845. Order 2024-771203, ref 415-5550-132."
    redacted, found, _ = presidio_rail.redact(text)
    assert found == ["PHONE_NUMBER"]
    assert redacted == "Reach the desk at <PHONE_NUMBER>, Berlin <PHONE_NUMBER> or <PHONE_NUMBER>. Order 2024-771203, ref 415-5550-132."


def test_a_name_the_text_announces_is_redacted_where_ner_misses_it(presidio_rail: PresidioRail) -> None:
    text = ("Approver: Pieter de Vries\nHi Tyler,\nPresent: Amara, Joaquín, Sven\nI've updated it, Mr Okafor.\n"
            "Contact: Accounts Payable\nHi team, thanks CFO")
    redacted, _, _ = presidio_rail.redact(text)
    assert redacted == ("Approver: <PERSON>\nHi <PERSON>,\nPresent: <PERSON>, <PERSON>, <PERSON>\nI've updated it, Mr <PERSON>.\n"
                        "Contact: Accounts Payable\nHi team, thanks CFO")


def test_the_phone_matcher_skipping_and_remembering_candidates_finds_what_libphonenumbers_finds() -> None:
    import phonenumbers

    from flotilla.guardrails.pii_phone import (_INNER_MATCHES, _PATTERN, _SECOND_NUMBER_START, _UNWANTED_END, _VERIFY,
                                               GroupedPhoneRecognizer, _Seen, _ShortCandidatesSkipped)
    from tests.support.pii_set import load

    texts = [doc.text for doc in load("dev") + load("test")]
    texts += ["Call 1-800-FLOWERS or 0800 1111, +683 4002, +49 30 1234, 030 12345, 24.50 / 980.00", "+1 212 555 0147 ext. 12"]
    texts += ["ref 2026-11-02 (call 2026-11-02)", "abc2125550147 then 212-555-0147"]  # a candidate remembered, then met again
    texts += ["+0044 20 7946 0321, +011 44 20 7946 0321, +00 1 212 555 0147"]  # a plus, then a dialling prefix: read per region
    for _ in range(2):  # the second time, every candidate's verdict is remembered
        leniencies = (phonenumbers.Leniency.VALID, phonenumbers.Leniency.STRICT_GROUPING)
        seen = {(text, leniency): _Seen() for text in texts for leniency in leniencies}  # shared by the regions, as in analyze
        for region in GroupedPhoneRecognizer.DEFAULT_SUPPORTED_REGIONS:
            for leniency in leniencies:
                for text in texts:
                    plain = [(m.start, m.end) for m in phonenumbers.PhoneNumberMatcher(text, region, leniency=leniency)]
                    ours = _ShortCandidatesSkipped(text, region, leniency=leniency, seen=seen[text, leniency])
                    assert [(m.start, m.end) for m in ours] == plain
    for hook in ("_parse_and_verify", "_extract_match", "_find", "_extract_inner_match"):  # the hooks it overrides
        assert hasattr(phonenumbers.PhoneNumberMatcher, hook)
    assert _VERIFY is not None  # the verification it remembers
    assert None not in (_PATTERN, _SECOND_NUMBER_START, _INNER_MATCHES, _UNWANTED_END)  # the steps it shares


def test_a_mastercard_2_series_number_is_a_card_when_its_check_digit_is_right(presidio_rail: PresidioRail) -> None:
    assert presidio_rail.redact("card 2226 8925 5388 5355, ref 2226892553885356")[0] == "card <CREDIT_CARD>, ref 2226892553885356"


def test_a_name_in_a_field_that_holds_a_person_is_redacted_by_both_paths(presidio_rail: PresidioRail) -> None:
    from flotilla.guardrails.pii_batch import BatchRedactor

    text = json.dumps({"customer": {"name": "Imani Okoro", "tier": "Gold"}, "product": {"name": "Ergonomic Chair"},
                       "contact_person": "Franziska Braun", "attendees": ["Ewa Zielińska", "Accounts Payable"], "lastName": "Mendoza"},
                      ensure_ascii=False)
    want = {"customer": {"name": "<PERSON>", "tier": "Gold"}, "product": {"name": "Ergonomic Chair"},
            "contact_person": "<PERSON>", "attendees": ["<PERSON>", "Accounts Payable"], "lastName": "<PERSON>"}
    assert json.loads(presidio_rail.redact(text)[0]) == want
    assert json.loads(BatchRedactor(presidio_rail).redact(text)) == want
    assert PresidioRail(entities=["EMAIL_ADDRESS"], analyzer=presidio_rail._analyzer).redact(text)[0] == text
