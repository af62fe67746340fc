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
from typing import Any

from flotilla.agents.document_triage.grounding import ground_invoice
from flotilla.agents.document_triage.schemas import Invoice, LineItem
from flotilla.agents.printed import MONEY, parse_date, parse_money

__all__ = ["read_labelled_fields", "read_line_items", "read_currency", "ground_and_read_labels"]

# English, German and French labels. Longest label first wins, so "invoice date" beats
# "invoice" and "total due" beats "total".
_LABELS: dict[str, tuple[str, ...]] = {
    "invoice_number": ("invoice number", "invoice no", "invoice #", "invoice nr", "invoice", "inv no", "bill number", "reference no",
                       "receipt number", "receipt no", "rechnungsnummer", "rechnungs-nr", "rechnung nr", "rechnung",
                       "numéro de facture", "n° de facture", "facture n°", "facture no", "facture"),
    "invoice_date": ("invoice date", "date of issue", "issue date", "date issued", "issued on", "billing date", "date",
                     "rechnungsdatum", "datum", "date de facture", "date d'émission", "date de la facture"),
    "due_date": ("due date", "payment due", "due by", "pay by", "due", "zahlbar bis", "fällig am", "fälligkeitsdatum", "fällig",
                 "date d'échéance", "échéance", "à payer avant le", "payable avant le"),
    "purchase_order": ("purchase order number", "purchase order no", "purchase order", "po number", "po no", "po #", "po", "your order",
                       "order ref", "ihre bestellung", "bestellnummer", "bestell-nr", "bestellung", "bon de commande", "votre commande",
                       "commande n°"),
    "subtotal": ("subtotal", "sub-total", "sub total", "net amount", "net total", "total net", "total before tax", "total excl",
                 "nettobetrag", "zwischensumme", "summe netto", "netto", "total ht", "montant ht", "sous-total"),
    "tax": ("vat", "tax", "gst", "sales tax", "mwst", "ust", "mehrwertsteuer", "umsatzsteuer", "tva"),
    "total": ("total due", "amount due", "grand total", "balance due", "total payable", "total amount", "invoice total", "total",
              "amount payable", "gesamtbetrag", "rechnungsbetrag", "gesamtsumme", "endbetrag", "zu zahlen", "total ttc", "montant ttc",
              "net à payer", "total à payer", "montant total"),
}
_OCR = str.maketrans({"0": "o", "1": "l", "|": "l"})  # what OCR swaps in a label's letters


def _squash(text: str) -> str:
    """A label's letters only, case- and OCR-insensitive: "Inv0ice numb er:" ~ "invoice number"."""
    return "".join(ch for ch in text.casefold().translate(_OCR) if ch.isalnum())


_BY_LENGTH = sorted(((_squash(label), field) for field, labels in _LABELS.items() for label in labels), key=lambda pair: -len(pair[0]))
_IDENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-/._]*[A-Za-z0-9]|[A-Za-z0-9]")
_MAX_ITEMS = Invoice.model_fields["line_items"].metadata[0].max_length
_NUM = r"\d{1,3}(?:[,.' \u00a0\u202f]\d{3})+[.,]\d{2}|\d+[.,]\d{2}"
_QTY = r"\d+(?:[.,]\d+)?"
_SYM = r"(?:[£€$]|CHF|EUR|GBP|USD)?\s?"
_ROWS = (
    # Toner …   12   61.00   732.00            (a table row: qty, unit price, amount)
    re.compile(rf"^\s*(?P<desc>\S.*?\S)\s{{2,}}(?P<qty>{_QTY})\s+{_SYM}(?P<unit>{_NUM})\s+{_SYM}(?P<amount>{_NUM})\s*$"),
    # - Toner …: 12 x €61.00 = €732.00         (a list in a letter)
    re.compile(rf"^\s*[-•*]?\s*(?P<desc>\S.*?\S):\s*(?P<qty>{_QTY})\s*[x×]\s*{_SYM}(?P<unit>{_NUM})\s*=\s*{_SYM}(?P<amount>{_NUM})\s*$"),
)
# 12 @ 61.00   732.00 under its description  (a receipt)
_UNDER = re.compile(rf"^\s*(?P<qty>{_QTY})\s*[@x×]\s*{_SYM}(?P<unit>{_NUM})\s+{_SYM}(?P<amount>{_NUM})\s*$")
_CURRENCIES = {"£": "GBP", "€": "EUR"}
_CODES = re.compile(r"(?<![A-Za-z])(EUR|GBP|USD|CHF|JPY|CAD|AUD|SEK|NOK|DKK|PLN|CZK)(?![A-Za-z])")


def _lines(text: str) -> list[str]:
    """The document's lines, with the cells of a pipe table spaced like a printed table."""
    return [re.sub(r"\s*\|\s*", "   ", line).strip() if line.count("|") >= 2 else line for line in text.splitlines()]


def _value(field: str, rest: str) -> Any:
    if field in ("subtotal", "tax", "total"):
        found = MONEY.findall(rest)
        return parse_money(found[-1]) if found else None  # "VAT 20%   455.80": the amount, not the rate
    if field in ("invoice_date", "due_date"):
        return parse_date(rest)
    match = _IDENT.search(rest)
    value = match.group(0) if match else None
    return value if value and any(ch.isdigit() for ch in value) else None  # an id has a digit


def _after_label(line: str, label: str) -> str | None:
    """What follows `label` (squashed) at the start of `line`, or None if the line does not start with it."""
    matched = 0
    for index, ch in enumerate(line):
        letter = _squash(ch)
        if not letter:
            continue
        if letter != label[matched]:
            return None
        matched += 1
        if matched == len(label):
            rest = line[index + 1:]
            return None if rest[:1].isalpha() else rest  # "Invoiced to", "Totals": a longer word
    return None


def _label_of(cell: str) -> str | None:
    squashed = _squash(cell)
    return next((field for label, field in _BY_LENGTH if label == squashed), None)


def _header_rows(lines: list[str]) -> list[tuple[str, str]]:
    """(field, value) pairs of a table whose header row is all labels and whose next line holds the values."""
    pairs = []
    for head, below in zip(lines, lines[1:]):
        cells, values = re.split(r"\s{2,}", head.strip()), re.split(r"\s{2,}", below.strip())
        fields = [_label_of(cell) for cell in cells]
        if len(cells) >= 2 and all(fields) and len(values) == len(cells):
            pairs += [(field, value) for field, value in zip(fields, values)]
    return pairs


def read_labelled_fields(text: str) -> dict[str, Any]:
    """Each field printed beside exactly one label value (fields printed with conflicting values are left out)."""
    seen: dict[str, set[Any]] = {}
    lines = _lines(text)
    found = list(_header_rows(lines))
    for line in lines:
        for label, field in _BY_LENGTH:
            rest = _after_label(line.strip(), label)
            if rest is not None:
                found.append((field, rest.lstrip(" .,;:#-\t'`~°")))
                break
    for field, rest in found:
        value = _value(field, rest)
        if value is not None:
            seen.setdefault(field, set()).add(value)
    return {field: values.pop() for field, values in seen.items() if len(values) == 1}


def _item(desc: str, qty: str, unit: str, amount: str) -> LineItem | None:
    quantity, price, total = float(qty.replace(",", ".")), parse_money(unit), parse_money(amount)
    if abs(quantity * price - total) >= 0.01:
        return None
    return LineItem(description=desc[:48].rstrip(), quantity=quantity, unit_price=price, amount=total)


def read_line_items(text: str) -> list[LineItem]:
    """Rows that give quantity, unit price and amount, where quantity × unit price = amount."""
    items, previous = [], ""
    for line in _lines(text):
        row = next((m for m in (pattern.match(line) for pattern in _ROWS) if m), None)
        under = _UNDER.match(line) if row is None else None
        item = None
        if row is not None:
            item = _item(row["desc"], row["qty"], row["unit"], row["amount"])
        elif under is not None and previous:
            item = _item(previous, under["qty"], under["unit"], under["amount"])
        if item is not None:
            items.append(item)
        previous = line.strip() if line.strip() and under is None else previous if line.strip() else ""
    return items


def read_currency(text: str) -> str | None:
    """The one currency a document names (by ISO code or an unambiguous symbol), or None if it names none or several."""
    named = set(_CODES.findall(text)) | {code for mark, code in _CURRENCIES.items() if mark in text}
    if not named and "$" in text:
        named = {"USD"}
    return named.pop() if len(named) == 1 else None


def ground_and_read_labels(invoice: Invoice, state: dict[str, Any]) -> tuple[Invoice, list[str]]:
    """The extract step's policy: grounding (values must be in the document), then every field
    the document labels, and every well-formed item row, held to what that line says."""
    invoice, notes = ground_invoice(invoice, state)
    text = str(state.get("input", ""))
    labelled = read_labelled_fields(text)
    currency = read_currency(text)
    if currency is not None:
        labelled["currency"] = currency
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
