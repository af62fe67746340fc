"""What an invoice prints explicitly: labelled fields and line-item rows, read by code.

Measured on the bundled sample, the embedded 135M model gets the vendor and invoice number
right but mixes up dates and totals (it reported the total as the subtotal, and the due date
as the invoice date) and garbles the item table; grounding cannot catch that, because the wrong
values *are* in the document, just on another line. So the extract step keeps the model for
what needs reading (who the vendor is, what a messy line means) and holds every value to the
line it belongs to:

    Invoice date:   2026-11-02        a value printed beside its field's label is that field
    Toner …   12   61.00   732.00     a row ending in qty, unit price, amount with qty × price
                                      = amount is a line item

Where the document labels a field, the labelled value wins over the model's and the step's
notes say what was corrected; where it does not, the model's (grounded) value stands.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from flotilla.agents.document_triage.grounding import ground_invoice
from flotilla.agents.document_triage.schemas import Invoice, LineItem

__all__ = ["read_labelled_fields", "read_line_items", "ground_and_read_labels"]

# Longest label first wins, so "invoice date" beats "invoice" and "total due" beats "total".
_LABELS: dict[str, tuple[str, ...]] = {
    "invoice_number": ("invoice number", "invoice no", "invoice #", "invoice nr", "invoice", "inv no", "bill number", "reference no"),
    "invoice_date": ("invoice date", "date of issue", "issue date", "date issued", "issued on", "billing date", "date"),
    "due_date": ("due date", "payment due", "due by", "pay by", "due"),
    "purchase_order": ("purchase order number", "purchase order no", "purchase order", "po number", "po no", "po #", "po", "your order", "order ref"),
    "subtotal": ("subtotal", "sub-total", "sub total", "net amount", "net total", "total net", "total before tax", "total excl"),
    "tax": ("vat", "tax", "gst", "sales tax", "mwst", "tva"),
    "total": ("total due", "amount due", "grand total", "balance due", "total payable", "total amount", "invoice total", "total"),
}
_BY_LENGTH = sorted(((label, field) for field, labels in _LABELS.items() for label in labels), key=lambda pair: -len(pair[0]))
_MONEY = re.compile(r"(?<![\w.])-?\d{1,3}(?:[,\s]\d{3})*\.\d{2}(?![\d])|(?<![\w.,])-?\d+\.\d{2}(?![\d])")
_IDENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-/._]*[A-Za-z0-9]|[A-Za-z0-9]")
_DATE_FORMATS = ("%Y-%m-%d", "%d %B %Y", "%d %b %Y", "%B %d, %Y", "%b %d, %Y", "%d.%m.%Y", "%d/%m/%Y", "%Y/%m/%d")
_MAX_ITEMS = Invoice.model_fields["line_items"].metadata[0].max_length
_ROW = re.compile(r"^\s*(?P<desc>\S.*?\S)\s{2,}(?P<qty>\d+(?:\.\d+)?)\s+[£€$]?(?P<unit>[\d,]+\.\d{2})\s+[£€$]?(?P<amount>[\d,]+\.\d{2})\s*$")


def _number(text: str) -> float:
    return float(re.sub(r"[,\s]", "", text))


def _date(text: str) -> str | None:
    cleaned = re.sub(r"(\d)(st|nd|rd|th)\b", r"\1", text.strip().rstrip(".,;"))
    for fmt in _DATE_FORMATS:
        for size in range(len(cleaned), 5, -1):  # the date may be followed by other words
            try:
                return datetime.strptime(cleaned[:size].strip(), fmt).date().isoformat()
            except ValueError:
                continue
    return None


def _value(field: str, rest: str) -> Any:
    if field in ("subtotal", "tax", "total"):
        found = _MONEY.findall(rest)
        return _number(found[-1]) if found else None  # "VAT 20%   455.80": the amount, not the rate
    if field in ("invoice_date", "due_date"):
        return _date(rest)
    match = _IDENT.search(rest)
    value = match.group(0) if match else None
    return value if value and any(ch.isdigit() for ch in value) else None  # an id has a digit


def read_labelled_fields(text: str) -> dict[str, Any]:
    """Each field printed beside exactly one label value (fields printed with conflicting values are left out)."""
    seen: dict[str, set[Any]] = {}
    for line in text.splitlines():
        lowered = line.strip().casefold()
        for label, field in _BY_LENGTH:
            if not lowered.startswith(label):
                continue
            rest = line.strip()[len(label):]
            if rest[:1].isalnum() and not rest[:1].isdigit():
                continue  # "Invoiced to", "Totals": a longer word, not this label
            value = _value(field, rest.lstrip(" .:#-\t"))
            if value is not None:
                seen.setdefault(field, set()).add(value)
            break
    return {field: values.pop() for field, values in seen.items() if len(values) == 1}


def read_line_items(text: str) -> list[LineItem]:
    """Rows that end in quantity, unit price and amount, where quantity × unit price = amount."""
    items = []
    for line in text.splitlines():
        row = _ROW.match(line)
        if row is None:
            continue
        qty, unit, amount = float(row["qty"]), _number(row["unit"]), _number(row["amount"])
        if abs(qty * unit - amount) < 0.01:
            items.append(LineItem(description=row["desc"][:48].rstrip(), quantity=qty, unit_price=unit, amount=amount))
    return items


def ground_and_read_labels(invoice: Invoice, state: dict[str, Any]) -> tuple[Invoice, list[str]]:
    """The extract step's policy: grounding (values must be in the document), then every field
    the document labels, and every well-formed item row, held to what that line says."""
    invoice, notes = ground_invoice(invoice, state)
    text = str(state.get("input", ""))
    labelled = read_labelled_fields(text)
    update: dict[str, Any] = {}
    for field, value in labelled.items():
        if getattr(invoice, field) != value:
            update[field] = value
            notes.append(f"labels: {field} {getattr(invoice, field)!r} differs from the document's {field.replace('_', ' ')} line; set to {value!r}")
    rows = read_line_items(text)
    if len(rows) > _MAX_ITEMS:  # more than the schema holds: a partial list would fail the sum check
        update["line_items"] = []
        notes.append(f"labels: the document has {len(rows)} item rows, more than {_MAX_ITEMS}; line items left empty (their sum is not checked)")
    elif rows and [i.model_dump() for i in rows] != [i.model_dump() for i in invoice.line_items]:
        update["line_items"] = rows
        notes.append(f"labels: line items set to the document's {len(rows)} item rows (the model gave {len(invoice.line_items)})")
    return (invoice.model_copy(update=update) if update else invoice), notes
