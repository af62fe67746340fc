"""Grounding: an extracted value must be found in the document it was extracted from.

A small model fills a schema even when the text has nothing to fill it with. Every value it
reports is looked up in the input; what is not there is set to null (or trimmed to the part
that is there), and the step's notes say what changed. Extraction can then be trusted to
mean "the document says so".
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from flotilla.agents.document_triage.schemas import Invoice, LineItem

__all__ = ["ground_invoice"]

_SYMBOLS = {"GBP": ("£", "GBP"), "EUR": ("€", "EUR"), "USD": ("$", "USD")}
_MIN_GROUNDED_CHARS = 8


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).casefold()


def _grounded_text(value: str | None, source: str) -> str | None:
    """The value if the source contains it, else its longest word prefix the source contains."""
    if not value:
        return None
    if _normalise(value) in source:
        return value
    words = value.split()
    for end in range(len(words) - 1, 0, -1):
        prefix = " ".join(words[:end]).rstrip(",;:")
        if len(prefix) >= _MIN_GROUNDED_CHARS and _normalise(prefix) in source:
            return prefix
    return None


def _number_forms(value: float, *, money: bool) -> set[str]:
    # Money is printed with cents on an invoice; a bare "12" is more likely a quantity or a date part.
    forms = {f"{value:.2f}", f"{value:,.2f}"}
    if not money and float(value).is_integer():
        forms.add(str(int(value)))
    return forms


def _grounded_number(value: float | None, source: str, *, money: bool = True) -> float | None:
    if value is None:
        return None
    # Not part of a longer number, a date (2026-12-02) or an identifier (INV-2026-0412).
    pattern = r"(?<![\w.\-/]){}(?![\w\-/]|\.\d)"
    return value if any(re.search(pattern.format(re.escape(f)), source) for f in _number_forms(value, money=money)) else None


def _grounded_date(value: str | None, source: str) -> str | None:
    try:
        day = date.fromisoformat(value) if value else None
    except ValueError:
        return None
    if day is None:
        return None
    forms = {day.isoformat(), day.strftime("%d/%m/%Y"), day.strftime("%m/%d/%Y"), day.strftime("%d.%m.%Y"),
             f"{day.day} {day.strftime('%B')} {day.year}", f"{day.strftime('%B')} {day.day}, {day.year}",
             f"{day.day} {day.strftime('%b')} {day.year}"}
    return value if any(_normalise(f) in source for f in forms) else None


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
