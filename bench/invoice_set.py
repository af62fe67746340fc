"""A small labelled set of invoices, generated deterministically: text in, expected fields out.

    from invoice_set import invoices
    for doc in invoices(50, seed=11): doc.text, doc.expected

Varied on purpose (vendors, currencies and their symbols, date formats, 1-4 line items, tax
rates, with and without a purchase order) and small enough to read: every expected value is
printed in the text exactly once, beside its label.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

__all__ = ["LabelledInvoice", "invoices", "FIELDS"]

FIELDS = ("vendor", "invoice_number", "invoice_date", "due_date", "purchase_order", "currency", "subtotal", "tax", "total", "line_items")
VENDORS = [
    "Northwind Office Supplies Ltd.", "Blue Harbor Catering", "Contoso Facilities GmbH", "Fabrikam Print & Copy",
    "Litware Cleaning Services", "Adatum Security Systems", "Tailspin Courier Co.", "Wide World Importers",
    "Proseware Software Ltd.", "Lucerne Publishing", "Margie's Travel", "Alpine Ski House",
]
ITEMS = [
    ("A4 copier paper, 80 gsm (box of 5)", 24.50), ("Toner cartridge TN-2420 (black)", 61.00), ("Ergonomic office chair", 189.00),
    ("Monthly cleaning, 2nd floor", 420.00), ("Courier, same-day, Leeds-York", 38.75), ("Catering, lunch for 12", 156.00),
    ("Annual software licence, 5 seats", 1250.00), ("Badge reader maintenance", 95.00), ("Printed brochures, A5 (500)", 210.40),
]
CURRENCIES = [("GBP", "£"), ("EUR", "€"), ("USD", "$")]


@dataclass(frozen=True)
class LabelledInvoice:
    text: str
    expected: dict[str, Any]


def _date_forms(day: date, style: int) -> str:
    return [day.isoformat(), day.strftime("%d/%m/%Y"), f"{day.day} {day.strftime('%B')} {day.year}"][style]


def invoices(n: int = 50, *, seed: int = 11) -> list[LabelledInvoice]:
    rng = random.Random(seed)
    out = []
    for index in range(n):
        vendor = VENDORS[index % len(VENDORS)]
        currency, symbol = CURRENCIES[rng.randrange(len(CURRENCIES))]
        issued = date(2026, 1, 5) + timedelta(days=rng.randrange(300))
        due = issued + timedelta(days=rng.choice((14, 30, 45)))
        number = f"{vendor[:2].upper()}-{2026}-{1000 + index * 7:04d}"
        po = f"PO-{7000 + index * 13}" if rng.random() < 0.7 else None
        lines = []
        for description, price in rng.sample(ITEMS, rng.randint(1, 4)):
            qty = rng.randint(1, 12)
            lines.append({"description": description, "quantity": float(qty), "unit_price": price, "amount": round(qty * price, 2)})
        subtotal = round(sum(line["amount"] for line in lines), 2)
        rate = rng.choice((0.0, 0.07, 0.2))
        tax = round(subtotal * rate, 2)
        total = round(subtotal + tax, 2)
        style = rng.randrange(3)
        rows = "\n".join(f"{l['description']:<40}{int(l['quantity']):>4}{l['unit_price']:>11.2f}{l['amount']:>12.2f}" for l in lines)
        text = (
            f"{vendor}\nINVOICE\n\nInvoice number: {number}\nInvoice date:   {_date_forms(issued, style)}\n"
            f"Due date:       {_date_forms(due, style)}\n" + (f"Purchase order: {po}\n" if po else "") +
            f"\nDescription                              Qty Unit price      Amount\n{rows}\n\n"
            f"Subtotal{subtotal:>59.2f}\nTax {int(rate * 100)}%{tax:>58.2f}\nTotal due ({currency}, {symbol}){total:>48.2f}\n"
        )
        expected = {
            "vendor": vendor, "invoice_number": number, "invoice_date": issued.isoformat(), "due_date": due.isoformat(),
            "purchase_order": po, "currency": currency, "line_items": lines, "subtotal": subtotal, "tax": tax, "total": total,
        }
        out.append(LabelledInvoice(text, expected))
    return out
