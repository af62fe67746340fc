"""Grounding: an extracted value must be found in the document it was extracted from.

A small model fills a schema even when the text has nothing to fill it with. Every value it
reports is looked up in the input; what is not there is set to null (or trimmed to the part
that is there), and the step's notes say what changed. Extraction can then be trusted to
mean "the document says so".
"""

from __future__ import annotations

from typing import Any

from flotilla.agents.document_triage.schemas import Invoice, LineItem
from flotilla.agents.grounding import grounded_date as _grounded_date
from flotilla.agents.grounding import grounded_number as _grounded_number
from flotilla.agents.grounding import grounded_text as _grounded_text
from flotilla.agents.grounding import normalise as _normalise

__all__ = ["ground_invoice"]

_SYMBOLS = {"GBP": ("£", "GBP"), "EUR": ("€", "EUR"), "USD": ("$", "USD")}


def _grounded_currency(value: str | None, raw: str) -> str | None:
    if value is None:
        return None
    return value if any(mark in raw for mark in _SYMBOLS.get(value, (value,))) else None


def ground_invoice(invoice: Invoice, state: dict[str, Any]) -> tuple[Invoice, list[str]]:
    raw = str(state.get("input", ""))
    source = _normalise(raw)
    grounded: dict[str, Any] = {
        "vendor": _grounded_text(invoice.vendor, source),
        "invoice_number": _grounded_text(invoice.invoice_number, source),
        "purchase_order": _grounded_text(invoice.purchase_order, source),
        "invoice_date": _grounded_date(invoice.invoice_date, source),
        "due_date": _grounded_date(invoice.due_date, source),
        "currency": _grounded_currency(invoice.currency, raw),
        "subtotal": _grounded_number(invoice.subtotal, source),
        "tax": _grounded_number(invoice.tax, source),
        "total": _grounded_number(invoice.total, source),
    }
    items: list[LineItem] = []
    seen: set[str] = set()
    for item in invoice.line_items:
        description = _grounded_text(item.description, source)
        if description is None or description.casefold() in seen:
            continue  # invented, or the same line reported twice
        seen.add(description.casefold())
        items.append(LineItem(
            description=description,
            quantity=_grounded_number(item.quantity, source, money=False),
            unit_price=_grounded_number(item.unit_price, source),
            amount=_grounded_number(item.amount, source),
        ))
    notes = [
        f"grounding: {field} {getattr(invoice, field)!r} is not in the document; set to {value!r}"
        for field, value in grounded.items()
        if value != getattr(invoice, field)
    ]
    if len(items) != len(invoice.line_items):
        notes.append(f"grounding: kept {len(items)} of {len(invoice.line_items)} line items found in the document")
    return invoice.model_copy(update={**grounded, "line_items": items}), notes
