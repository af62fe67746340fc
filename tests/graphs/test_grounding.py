"""Extracted values must be found in the document: invented ones become null."""

from __future__ import annotations

from pathlib import Path

from flotilla.agents.document_triage.grounding import ground_invoice
from flotilla.agents.document_triage.schemas import Invoice

from .conftest import TRIAGE_ANSWERS

SAMPLE = (Path(__file__).resolve().parents[2] / "graphs" / "samples" / "invoice.txt").read_text()


def test_values_found_in_the_invoice_are_kept() -> None:
    invoice = Invoice.model_validate(TRIAGE_ANSWERS["Invoice"])
    grounded, notes = ground_invoice(invoice, {"input": SAMPLE})
    assert grounded.invoice_number == "INV-2026-0412" and grounded.total == 2734.8 and grounded.currency == "GBP"
    assert grounded.invoice_date == "2026-11-02" and grounded.tax == 455.8
    assert [i.amount for i in grounded.line_items] == [980.0, 732.0, 567.0]
    assert [i.description for i in grounded.line_items] == ["A4 copier paper", "Toner cartridge", "Office chair"]
    assert notes == []


def test_line_items_not_in_the_text_or_repeated_are_dropped() -> None:
    items = [*TRIAGE_ANSWERS["Invoice"]["line_items"], {"description": "Toner cartridge", "quantity": 1, "unit_price": 2.0, "amount": 2.0},
             {"description": "Gold-plated stapler", "quantity": 1, "unit_price": 9.0, "amount": 9.0}]
    grounded, notes = ground_invoice(Invoice.model_validate({**TRIAGE_ANSWERS["Invoice"], "line_items": items}), {"input": SAMPLE})
    assert [i.description for i in grounded.line_items] == ["A4 copier paper", "Toner cartridge", "Office chair"]
    assert notes == ["grounding: kept 3 of 5 line items found in the document"]


def test_invented_values_become_null_and_a_suffix_is_trimmed() -> None:
    invented = {**TRIAGE_ANSWERS["Invoice"], "vendor": "Northwind Office Supplies LLP, Northwind", "invoice_number": "1234567890",
                "due_date": "2026-11-09", "total": 12.0, "currency": "USD"}
    grounded, notes = ground_invoice(Invoice.model_validate(invented), {"input": SAMPLE})
    assert grounded.vendor == "Northwind Office Supplies"
    assert (grounded.invoice_number, grounded.due_date, grounded.total, grounded.currency) == (None, None, None, None)
    assert any("invoice_number '1234567890' is not in the document" in n for n in notes)


def test_a_document_that_is_not_an_invoice_keeps_almost_nothing() -> None:
    minutes = "Minutes of the facilities meeting, 3 November 2026. Present: A. Patel, J. Moreau. Next meeting on 1 December."
    invented = {**TRIAGE_ANSWERS["Invoice"], "vendor": "A. Patel, J. Moreau", "invoice_number": "1234567890123456789",
                "invoice_date": "1234-56-78"[:4] + "-01-01"}
    grounded, _ = ground_invoice(Invoice.model_validate(invented), {"input": minutes})
    assert grounded.invoice_number is None and grounded.total is None and grounded.line_items == []
