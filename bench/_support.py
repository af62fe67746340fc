"""What several benches set up the same way: the scripted invoice answer, the stub-model project
(flotilla.yaml whose aliases all point at one stub OpenAI-compatible server, and the environment
that runs `flotilla` against it), rails off, and percentiles.

Not a bench itself (`python -m bench` runs only bench_*.py). Temporal dev server and worker
helpers are in tests/support/temporal.py, shared with the tests.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["REPO", "INVOICE_ANSWER", "TRIAGE_ALIASES", "RAILS_OFF", "pct", "stub_models_yaml", "project_env", "invoice"]

REPO = Path(__file__).resolve().parents[1]

INVOICE_ANSWER = {
    "vendor": "Northwind Office Supplies Ltd.", "invoice_number": "INV-2026-0412", "invoice_date": "2026-11-02",
    "due_date": "2026-12-02", "purchase_order": "PO-7781", "currency": "GBP",
    "line_items": [
        {"description": "A4 copier paper", "quantity": 40, "unit_price": 24.5, "amount": 980.0},
        {"description": "Toner cartridge", "quantity": 12, "unit_price": 61.0, "amount": 732.0},
        {"description": "Office chair", "quantity": 3, "unit_price": 189.0, "amount": 567.0},
    ],
    "subtotal": 2279.0, "tax": 455.8, "total": 2734.8,
}
"""The extract step's right answer for graphs/samples/invoice.txt (a scripted model replies with it)."""

TRIAGE_ALIASES = ("specialist-extract", "specialist-analyze", "specialist-decide", "specialist-write", "frontier")
"""The model aliases the document-triage workflows use."""

RAILS_OFF = {name: {"enabled": False} for name in ("presidio", "yara", "injection_classifier", "content_safety", "tool_screen", "llama_guard", "nemo")}


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of `values`, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def stub_models_yaml(url: str, aliases: tuple[str, ...] = TRIAGE_ALIASES) -> list[str]:
    """flotilla.yaml lines of a `models:` section sending every alias to the stub server at `url`."""
    lines = ["models:"]
    for alias in aliases:
        lines += [f"  {alias}:", "    provider: openai-compatible", f"    base_url: {url}/v1", "    model: stub"]
    return lines


def project_env(tmp: Path) -> dict[str, str]:
    """The environment of a `flotilla` subprocess using tmp/flotilla.yaml, tmp/data and tmp/cache (and this checkout)."""
    return {
        **os.environ,
        "FLOTILLA_CONFIG": str(tmp / "flotilla.yaml"),
        "FLOTILLA_DATA_DIR": str(tmp / "data"),
        "FLOTILLA_CACHE_DIR": str(tmp / "cache"),
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }


SAMPLE_INVOICE = (REPO / "graphs" / "samples" / "invoice.txt").read_text()
FIRST = ["Maria", "John", "Aisha", "Wei", "Oluwaseun", "Sofia", "Liam", "Priya", "Mateo", "Hannah", "Kenji", "Fatima", "Lars", "Chloe", "Ravi", "Ingrid"]
LAST = ["Gonzalez", "Smith", "Khan", "Zhang", "Adeyemi", "Rossi", "Murphy", "Patel", "Fernandez", "Schmidt", "Tanaka", "Haddad", "Nilsson", "Dubois", "Iyer", "Berg"]
TRADES = ["Office Supplies", "Paper Goods", "Stationery", "Print Services", "Facilities", "Logistics"]
CITIES = [("Leeds", "LS1 4DY"), ("Bristol", "BS1 5TR"), ("Glasgow", "G2 1QX"), ("Cardiff", "CF10 1EP"), ("York", "YO1 7HH")]


def iban_gb(n: int) -> str:
    """A valid GB IBAN (mod-97 check digits), grouped as printed."""
    bban = f"BUKB{202015 + n % 7:06d}{55555555 + n:08d}"[:18]
    digits = "".join(str(int(c, 36)) for c in bban + "GB00")
    check = 98 - int(digits) % 97
    raw = f"GB{check:02d}{bban}"
    return " ".join(raw[i: i + 4] for i in range(0, len(raw), 4))


def invoice(n: int) -> tuple[str, dict[str, Any]]:
    """Run n's invoice (every paragraph differs from every other run's) and what it says."""
    first, last = FIRST[n % 16], LAST[(n // 16 + n) % 16]
    vendor = f"{LAST[(n * 7) % 16]} {TRADES[n % 6]} Ltd."
    city, postcode = CITIES[n % 5]
    number, po = f"INV-2026-{1000 + n}", f"PO-{7000 + n}"
    q = (10 + n % 37, 2 + n % 11, 1 + n % 5)
    prices = (24.5, 61.0, 189.0)
    amounts = [round(a * b, 2) for a, b in zip(q, prices)]
    subtotal = round(sum(amounts), 2)
    tax = round(subtotal * 0.2, 2)
    total = round(subtotal + tax, 2)
    domain = vendor.split()[0].lower() + "-" + TRADES[n % 6].split()[0].lower() + ".co.uk"
    text = (
        SAMPLE_INVOICE.replace("Northwind Office Supplies Ltd.", vendor)
        .replace("14 Harbour Row, Leeds LS1 4DY", f"{14 + n} Harbour Row, {city} {postcode}")
        .replace("VAT GB 284 9931 06", f"VAT GB 284 {9931 + n} 06")
        .replace("INV-2026-0412", number).replace("PO-7781", po)
        .replace("Industriestrasse 9", f"Industriestrasse {9 + n}, attn. {first} {last}")
        .replace("   40       24.50        980.00", f"   {q[0]:2d}       24.50     {amounts[0]:7.2f}")
        .replace("   12       61.00        732.00", f"   {q[1]:2d}       61.00     {amounts[1]:7.2f}")
        .replace("    3      189.00        567.00", f"    {q[2]}      189.00     {amounts[2]:7.2f}")
        .replace("2279.00", f"{subtotal:.2f}").replace("455.80", f"{tax:.2f}").replace("2734.80", f"{total:.2f}")
        .replace("GB33 BUKB 2020 1555 5555 55", iban_gb(n))
        .replace("billing@northwind-supplies.example", f"{first.lower()}.{last.lower()}@{domain}")
        .replace("+44 113 496 0123", f"+44 113 496 {n % 10_000:04d}")
    )
    items = [{"description": d, "quantity": a, "unit_price": p, "amount": m}
             for d, a, p, m in zip(("A4 copier paper, 80 gsm (box of 5)", "Toner cartridge TN-2420 (black)", "Ergonomic office chair, model K2"), q, prices, amounts)]
    answers = {
        "Invoice": {"vendor": vendor, "invoice_number": number, "invoice_date": "2026-11-02", "due_date": "2026-12-02",
                    "purchase_order": po, "currency": "GBP", "line_items": items, "subtotal": subtotal, "tax": tax, "total": total},
        "Analysis": {"findings": [{"check": "line_items_sum", "status": "pass", "detail": f"{subtotal:.2f} matches the subtotal"}]},
        "Decision": {"decision": "hold", "reasons": [f"Vendor {vendor} is not in the vendor master."], "confidence": 0.8},
        "Note": {"subject": f"Invoice {number} on hold", "body": f"Dear {first} {last}, your invoice {number} from {vendor} is on hold."},
    }
    return text, answers
