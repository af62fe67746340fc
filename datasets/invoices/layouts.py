"""How a supplier invoice is printed: number and date styles, OCR-style noise, and the layouts.

Every layout prints the values of `Doc` (the true extraction) exactly once beside what a person
reads as their label; noise touches labels and running text only, never a value, so the
expected extraction stays what a careful reader would write down.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Callable

__all__ = ["Doc", "Style", "LAYOUTS", "TRAIN_LAYOUTS", "EVAL_ONLY_LAYOUTS", "DATE_STYLES", "render"]

MONTHS = {
    "en": ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"],
    "de": ["Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August", "September", "Oktober", "November", "Dezember"],
    "fr": ["janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre", "novembre", "décembre"],
}
DATE_STYLES: dict[str, Callable[[date], str]] = {
    "iso": lambda d: d.isoformat(),
    "dmy": lambda d: d.strftime("%d/%m/%Y"),
    "dmy_long": lambda d: f"{d.day} {MONTHS['en'][d.month - 1]} {d.year}",
    "mdy_long": lambda d: f"{MONTHS['en'][d.month - 1]} {d.day}, {d.year}",
    "d_mon_y": lambda d: f"{d.day} {MONTHS['en'][d.month - 1][:3]} {d.year}",
    "de_long": lambda d: f"{d.day}. {MONTHS['de'][d.month - 1]} {d.year}",
    "de_num": lambda d: d.strftime("%d.%m.%Y"),
    "fr_long": lambda d: f"{d.day} {MONTHS['fr'][d.month - 1]} {d.year}",
}
SYMBOLS = {"GBP": "£", "EUR": "€", "USD": "$"}


def _money(value: float, style: str) -> str:
    en = f"{value:,.2f}"
    if style == "plain":
        return f"{value:.2f}"
    if style == "de":
        return en.replace(",", "_").replace(".", ",").replace("_", ".")
    if style == "fr":
        return en.replace(",", " ").replace(".", ",")
    return en


@dataclass(frozen=True)
class Style:
    """How numbers and dates are printed, and how noisy the scan is."""

    numbers: str  # en 1,234.56 | plain 1234.56 | de 1.234,56 | fr 1 234,56
    dates: str  # a key of DATE_STYLES
    ocr: bool
    rng: random.Random = field(compare=False, repr=False)

    def money(self, value: float) -> str:
        return _money(value, self.numbers)

    def day(self, value: date) -> str:
        return DATE_STYLES[self.dates](value)

    def qty(self, value: float) -> str:
        return str(int(value)) if float(value).is_integer() else _money(value, self.numbers)

    def t(self, text: str) -> str:
        """Label or running text, as the scanner read it: O/0 and l/1 swaps, split words, stray marks."""
        if not self.ocr:
            return text
        out = []
        for word in text.split(" "):
            roll = self.rng.random()
            if roll < 0.10 and "o" in word.lower():
                word = word.replace("o", "0", 1).replace("O", "0", 1)
            elif roll < 0.18 and ("l" in word or "I" in word):
                word = word.replace("I", "l", 1) if "I" in word else word.replace("l", "1", 1)
            elif roll < 0.24 and len(word) > 5:
                cut = self.rng.randrange(2, len(word) - 2)
                word = f"{word[:cut]} {word[cut:]}"
            elif roll < 0.28 and word:
                word += self.rng.choice(["'", ".", ",", "`", "~", "°"])
            out.append(word)
        return " ".join(out)


@dataclass
class Doc:
    """One invoice's true content (None = not printed) plus what the letterhead shows."""

    vendor: str | None
    address: str
    vat: str | None
    iban: str | None
    email: str
    invoice_number: str | None
    invoice_date: date
    due_date: date | None
    purchase_order: str | None
    currency: str
    lines: list[dict[str, Any]]
    subtotal: float
    tax_rate: float
    tax: float | None
    total: float
    terms: str
    banner: str | None = None  # "COPY", "REMINDER": on re-sent invoices

    def rate(self) -> str:
        pct = self.tax_rate * 100
        return f"{pct:.0f}" if pct.is_integer() else f"{pct:.1f}"


BUYER = "Contoso Manufacturing GmbH\nAccounts Payable, Industriestrasse 9, 70565 Stuttgart, Germany"


def _head(d: Doc, s: Style) -> list[str]:
    out = [d.vendor] if d.vendor else []
    out.append(s.t(d.address))
    if d.vat:
        out.append(f"{s.t('VAT')} {d.vat}")
    return out


def _table(d: Doc, s: Style, heads: tuple[str, str, str, str], sym: bool = False) -> list[str]:
    lead = SYMBOLS.get(d.currency, "") if sym else ""
    width = max(40, *(len(line["description"]) + 3 for line in d.lines))  # at least two spaces before the quantity
    rows = [f"{s.t(heads[0]):<{width}}{s.t(heads[1]):>5}{s.t(heads[2]):>14}{s.t(heads[3]):>14}"]
    for line in d.lines:
        rows.append(f"{line['description']:<{width}}{s.qty(line['quantity']):>5}{lead + s.money(line['unit_price']):>14}{lead + s.money(line['amount']):>14}")
    return rows


def _totals(d: Doc, s: Style, sub: str, tax: str, total: str) -> list[str]:
    out = [f"{s.t(sub):<59}{s.money(d.subtotal):>14}"]
    if d.tax is not None:
        out.append(f"{s.t(f'{tax} {d.rate()}%'):<59}{s.money(d.tax):>14}")
    out.append(f"{s.t(total) + f' ({d.currency})':<59}{s.money(d.total):>14}")
    return out


def labels_layout(d: Doc, s: Style) -> str:
    out = _head(d, s) + ["", s.t(d.banner or "INVOICE"), ""]
    if d.invoice_number:
        out.append(f"{s.t('Invoice number:'):<17}{d.invoice_number}")
    out.append(f"{s.t('Invoice date:'):<17}{s.day(d.invoice_date)}")
    if d.due_date:
        out.append(f"{s.t('Due date:'):<17}{s.day(d.due_date)}")
    if d.purchase_order:
        out.append(f"{s.t('Purchase order:'):<17}{d.purchase_order}")
    out += ["", s.t("Bill to:"), BUYER, ""] + _table(d, s, ("Description", "Qty", "Unit price", "Amount")) + [""]
    out += _totals(d, s, "Subtotal", "VAT", "Total due")
    out += ["", s.t(f"Payment terms: {d.terms}. Bank transfer") + (f", IBAN {d.iban}." if d.iban else "."), f"{s.t('Questions:')} {d.email}"]
    return "\n".join(out) + "\n"


def columns_layout(d: Doc, s: Style) -> str:
    """A header table: labels on one row, values under them (no `label: value` pairs)."""
    cells = [("Invoice No.", d.invoice_number), ("Date", s.day(d.invoice_date)), ("Due", s.day(d.due_date) if d.due_date else None), ("Your order", d.purchase_order)]
    cells = [(k, v) for k, v in cells if v]
    out = _head(d, s) + ["", f"{s.t(d.banner or 'TAX INVOICE'):>60}", ""]
    out += ["".join(f"{s.t(k):<20}" for k, _ in cells).rstrip(), "".join(f"{v:<20}" for _, v in cells).rstrip(), ""]
    out += [s.t("Customer:"), BUYER, ""] + _table(d, s, ("Item", "Qty", "Price", "Line total"), sym=True) + [""]
    out += _totals(d, s, "Net amount", "Sales tax", "Amount payable")
    out += ["", s.t(f"Terms: {d.terms}.") + (f" IBAN {d.iban}" if d.iban else "")]
    return "\n".join(out) + "\n"


def letter_layout(d: Doc, s: Style) -> str:
    sym = SYMBOLS.get(d.currency, d.currency + " ")
    out = _head(d, s) + ["", BUYER, "", s.day(d.invoice_date), ""]
    out.append(s.t("Dear Accounts Payable team,"))
    out.append("")
    ref = f" {d.invoice_number}" if d.invoice_number else ""
    order = f", {s.t('delivered against your purchase order')} {d.purchase_order}" if d.purchase_order else ""
    out.append(f"{s.t('please find below our invoice')}{ref} {s.t('for the following')}{order}:")
    out.append("")
    for line in d.lines:
        out.append(f"  - {line['description']}: {s.qty(line['quantity'])} x {sym}{s.money(line['unit_price'])} = {sym}{s.money(line['amount'])}")
    out.append("")
    tax = f" plus {d.rate()}% VAT of {sym}{s.money(d.tax)}" if d.tax is not None else ""
    due = f", payable by {s.day(d.due_date)}" if d.due_date else ""
    out.append(s.t("The goods come to") + f" {sym}{s.money(d.subtotal)} {s.t('net')}{tax}, " + s.t("a total of") + f" {sym}{s.money(d.total)} ({d.currency}){due}.")
    if d.iban:
        out.append(s.t("Please pay by bank transfer to") + f" {d.iban}.")
    out += ["", s.t("Kind regards,"), s.t("Accounts receivable"), d.email]
    return "\n".join(out) + "\n"


def german_layout(d: Doc, s: Style) -> str:
    out = _head(d, s)[:2] + ([f"USt-IdNr.: {d.vat}"] if d.vat else []) + ["", BUYER, "", s.t(d.banner or "RECHNUNG"), ""]
    if d.invoice_number:
        out.append(f"{s.t('Rechnungsnummer:'):<20}{d.invoice_number}")
    out.append(f"{s.t('Rechnungsdatum:'):<20}{s.day(d.invoice_date)}")
    if d.due_date:
        out.append(f"{s.t('Zahlbar bis:'):<20}{s.day(d.due_date)}")
    if d.purchase_order:
        out.append(f"{s.t('Ihre Bestellung:'):<20}{d.purchase_order}")
    out += [""] + _table(d, s, ("Bezeichnung", "Menge", "Einzelpreis", "Betrag")) + [""]
    out += _totals(d, s, "Nettobetrag", "MwSt.", "Gesamtbetrag")
    out += ["", s.t(f"Zahlungsbedingungen: {d.terms}.") + (f" IBAN: {d.iban}" if d.iban else "")]
    return "\n".join(out) + "\n"


def french_layout(d: Doc, s: Style) -> str:
    out = _head(d, s)[:2] + ([f"N° TVA : {d.vat}"] if d.vat else []) + ["", s.t(d.banner or "FACTURE"), ""]
    if d.invoice_number:
        out.append(f"{s.t('Facture n° :'):<22}{d.invoice_number}")
    out.append(f"{s.t('Date de facture :'):<22}{s.day(d.invoice_date)}")
    if d.due_date:
        out.append(f"{s.t('Échéance :'):<22}{s.day(d.due_date)}")
    if d.purchase_order:
        out.append(f"{s.t('Bon de commande :'):<22}{d.purchase_order}")
    out += ["", s.t("Client :"), BUYER, ""] + _table(d, s, ("Désignation", "Qté", "Prix unitaire", "Montant")) + [""]
    out += _totals(d, s, "Total HT", "TVA", "Total TTC")
    out += ["", s.t(f"Conditions de paiement : {d.terms}.") + (f" IBAN : {d.iban}" if d.iban else "")]
    return "\n".join(out) + "\n"


def receipt_layout(d: Doc, s: Style) -> str:
    out = [f"{(d.vendor or '').upper():^40}".rstrip(), f"{s.t(d.address):^40}".rstrip(), "", f"{s.t(d.banner or 'SALES RECEIPT'):^40}".rstrip()]
    if d.invoice_number:
        out.append(f"{s.t('Receipt no')} {d.invoice_number}")
    out.append(f"{s.t('Date')} {s.day(d.invoice_date)}")
    if d.purchase_order:
        out.append(f"{s.t('PO')} {d.purchase_order}")
    out.append("-" * 40)
    for line in d.lines:
        out.append(line["description"])
        out.append(f"  {s.qty(line['quantity'])} @ {s.money(line['unit_price'])}{s.money(line['amount']):>{30 - len(s.money(line['unit_price']))}}")
    out.append("-" * 40)
    out.append(f"{s.t('SUBTOTAL'):<24}{s.money(d.subtotal):>16}")
    if d.tax is not None:
        out.append(f"{s.t(f'TAX {d.rate()}%'):<24}{s.money(d.tax):>16}")
    out.append(f"{s.t('TOTAL') + ' ' + d.currency:<24}{s.money(d.total):>16}")
    out += ["", f"{s.t('Thank you for your business'):^40}".rstrip()]
    return "\n".join(out) + "\n"


# Eval-only layouts: never in the training split, so the eval measures generalisation.
def email_layout(d: Doc, s: Style) -> str:
    subject = f"Invoice {d.invoice_number}" if d.invoice_number else "Your invoice"
    out = [f"From: {d.email}", "To: ap@contoso-manufacturing.example", f"Subject: {subject}", ""]
    out.append(s.t("Hello,"))
    out.append("")
    what = f"invoice {d.invoice_number}" if d.invoice_number else "our invoice"
    out.append(s.t("Please find") + f" {what} " + s.t("of") + f" {s.day(d.invoice_date)} " + s.t("below") + ".")
    if d.purchase_order:
        out.append(s.t("Order reference:") + f" {d.purchase_order}")
    out += ["", f"{s.t('Item')} | {s.t('Qty')} | {s.t('Unit')} | {s.t('Amount')}"]
    for line in d.lines:
        out.append(f"{line['description']} | {s.qty(line['quantity'])} | {s.money(line['unit_price'])} | {s.money(line['amount'])}")
    out.append("")
    tax = f", {s.t('tax')} ({d.rate()}%) {s.money(d.tax)}" if d.tax is not None else ""
    out.append(f"{s.t('Net')} {s.money(d.subtotal)}{tax}, {s.t('to pay')} {d.currency} {s.money(d.total)}.")
    if d.due_date:
        out.append(s.t("Please settle by") + f" {s.day(d.due_date)}.")
    out += ["", s.t("Best regards,"), d.vendor or "", s.t(d.address)]
    return "\n".join(out) + "\n"


def grid_layout(d: Doc, s: Style) -> str:
    cells = [("Invoice", d.invoice_number), ("Issued", s.day(d.invoice_date)), ("Payable by", s.day(d.due_date) if d.due_date else None), ("PO", d.purchase_order), ("Currency", d.currency)]
    cells = [(k, v) for k, v in cells if v]
    widths = [max(len(k), len(v)) + 2 for k, v in cells]
    out = _head(d, s) + ["", s.t(d.banner or "Invoice"), ""]
    out.append("|" + "|".join(f" {s.t(k):<{w - 1}}" for (k, _), w in zip(cells, widths)) + "|")
    out.append("|" + "|".join(f" {v:<{w - 1}}" for (_, v), w in zip(cells, widths)) + "|")
    out += ["", f"| {s.t('Description')} | {s.t('Qty')} | {s.t('Price')} | {s.t('Total')} |"]
    for line in d.lines:
        out.append(f"| {line['description']} | {s.qty(line['quantity'])} | {s.money(line['unit_price'])} | {s.money(line['amount'])} |")
    out.append("")
    out.append(f"| {s.t('Net')} | {s.money(d.subtotal)} |")
    if d.tax is not None:
        out.append(f"| {s.t('Tax')} {d.rate()}% | {s.money(d.tax)} |")
    out.append(f"| {s.t('Gross')} | {s.money(d.total)} |")
    return "\n".join(out) + "\n"


LAYOUTS: dict[str, Callable[[Doc, Style], str]] = {
    "labels": labels_layout, "columns": columns_layout, "letter": letter_layout, "german": german_layout,
    "french": french_layout, "receipt": receipt_layout, "email": email_layout, "grid": grid_layout,
}
TRAIN_LAYOUTS = ("labels", "columns", "letter", "german", "french", "receipt")
EVAL_ONLY_LAYOUTS = ("email", "grid")
LANGUAGE = {"german": "de", "french": "fr"}


def render(layout: str, d: Doc, s: Style) -> str:
    return LAYOUTS[layout](d, s)
