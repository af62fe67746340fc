"""The label reader and printed forms: English, German and French documents, tables, receipts, OCR-noisy labels."""

from __future__ import annotations

from datetime import date

import pytest

from flotilla.agents.document_triage.labels import read_currency, read_labelled_fields, read_line_items
from flotilla.agents.grounding import grounded_date, grounded_number, normalise
from flotilla.agents.printed import MONEY, money_forms, parse_date, parse_money


@pytest.mark.parametrize(("printed", "value"), [
    ("1,234.56", 1234.56), ("1.234,56", 1234.56), ("1 234,56", 1234.56), ("1'234.56", 1234.56),
    ("1234,56", 1234.56), ("99,60", 99.6), ("-12.50", -12.5), ("18,450.00", 18450.0),
])
def test_amounts_parse_in_every_convention(printed: str, value: float) -> None:
    assert MONEY.fullmatch(printed)
    assert parse_money(printed) == pytest.approx(value)
    assert printed in money_forms(value)


@pytest.mark.parametrize(("printed", "iso"), [
    ("22. November 2026", "2026-11-22"), ("5. Dez. 2026", "2026-12-05"), ("29 octobre 2026", "2026-10-29"),
    ("1er décembre 2026", "2026-12-01"), ("December 5, 2026", "2026-12-05"), ("5 Dec 2026", "2026-12-05"),
    ("05.12.2026", "2026-12-05"), ("2026-12-05 (net 30)", "2026-12-05"), ("31. Februar 2026", None), ("net 30", None),
])
def test_dates_parse_in_english_german_and_french(printed: str, iso: str | None) -> None:
    assert parse_date(printed) == iso


def test_grounding_finds_continental_forms_but_not_parts_of_longer_numbers() -> None:
    source = normalise("Gesamtbetrag (EUR)   21.955,50\nRechnungsdatum: 22. November 2026\nTotal 1,234.56")
    assert grounded_number(21955.5, source) == 21955.5
    assert grounded_number(234.56, source) is None  # inside 1,234.56
    assert grounded_date("2026-11-22", source) == "2026-11-22"
    assert grounded_date(date(2026, 11, 23).isoformat(), source) is None


def test_german_invoice_with_noisy_labels() -> None:
    text = """Kühn & Partner Elektrotechnik KG
USt-IdNr.: DE122104325
Rechnungs nummer:    R-8628
Rechnungsdat um:'    22. November 2026
Zahlbar bis:        22. Dezember 2026
Ihre Bestellung:    PO-9478

Bezeichnung                             Menge   Einzelpreis        Betrag
Wartung Druckluftanlage                     9      1.360,00     12.240,00

Nettobetrag                                                      12.240,00
MwSt. 19%                                                         2.325,60
Gesamtbetrag (EUR)                                               14.565,60
"""
    assert read_labelled_fields(text) == {
        "invoice_number": "R-8628", "invoice_date": "2026-11-22", "due_date": "2026-12-22", "purchase_order": "PO-9478",
        "subtotal": 12240.0, "tax": 2325.6, "total": 14565.6,
    }
    [item] = read_line_items(text)
    assert (item.description, item.quantity, item.unit_price, item.amount) == ("Wartung Druckluftanlage", 9.0, 1360.0, 12240.0)
    assert read_currency(text) == "EUR"


def test_french_vat_number_is_not_the_tax_and_ocr_digits_in_labels_are_read() -> None:
    text = "N° TVA : FR115185833\nFacture n° :'   FA-38499\nTVA° 20%'      99,60\nT0tal TTC (EUR)    697,60\n"
    assert read_labelled_fields(text) == {"invoice_number": "FA-38499", "tax": 99.6, "total": 697.6}


def test_a_header_row_of_labels_gives_the_values_below_it() -> None:
    text = "Invoice No.         Date                Due                 Your order\n" \
           "INV-2026-70995      2026-10-03          2026-11-02          PO-7781\n"
    assert read_labelled_fields(text) == {
        "invoice_number": "INV-2026-70995", "invoice_date": "2026-10-03", "due_date": "2026-11-02", "purchase_order": "PO-7781",
    }


def test_receipt_letter_and_pipe_table_items() -> None:
    receipt = "Toner cartridge TN-2420 (black)\n  12 @ 61.00                   732.00\n"
    letter = "  - Montage vor Ort, Stunde: 5 x €85.00 = €425.00\n"
    pipes = "| Item | Qty | Price | Amount |\n| Courier, same-day | 2 | 38.75 | 77.50 |\n"
    assert [(i.description, i.amount) for i in read_line_items(receipt)] == [("Toner cartridge TN-2420 (black)", 732.0)]
    assert [(i.description, i.amount) for i in read_line_items(letter)] == [("Montage vor Ort, Stunde", 425.0)]
    assert [(i.description, i.quantity, i.amount) for i in read_line_items(pipes)] == [("Courier, same-day", 2.0, 77.5)]


def test_rows_whose_arithmetic_does_not_hold_are_not_items() -> None:
    assert read_line_items("Chair      3     189.00     560.00\n") == []


def test_conflicting_labels_and_several_currencies_are_left_to_the_model() -> None:
    assert "total" not in read_labelled_fields("Total: 100.00\nTotal: 120.00\n")
    assert read_currency("Amount £20.00 (EUR 23.40)") is None
    assert read_currency("Total CHF 1'200.00") == "CHF"
    assert read_currency("no money named here") is None
