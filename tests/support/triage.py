"""Canned, schema-valid answers of the four document-triage agents for the sample invoice
(graphs/samples/invoice.txt): the replies of instant test models, by output schema name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["TRIAGE_ANSWERS", "FOUR_AGENT_TRIAGE"]

FOUR_AGENT_TRIAGE = Path(__file__).with_name("four_agent_triage.yaml")
"""Document triage as four model steps, for tests where every step is a (test) model call."""

TRIAGE_ANSWERS: dict[str, Any] = {
    "Invoice": {
        "vendor": "Northwind Office Supplies Ltd.",
        "invoice_number": "INV-2026-0412",
        "invoice_date": "2026-11-02",
        "due_date": "2026-12-02",
        "purchase_order": "PO-7781",
        "currency": "GBP",
        "line_items": [
            {"description": "A4 copier paper", "quantity": 40, "unit_price": 24.5, "amount": 980.0},
            {"description": "Toner cartridge", "quantity": 12, "unit_price": 61.0, "amount": 732.0},
            {"description": "Office chair", "quantity": 3, "unit_price": 189.0, "amount": 567.0},
        ],
        "subtotal": 2279.0,
        "tax": 455.8,
        "total": 2734.8,
    },
    "Analysis": {"findings": [{"check": "line_items_sum", "status": "pass", "detail": "sums match"}]},
    "Decision": {"decision": "approve", "reasons": ["all checks passed"], "confidence": 0.9},
    "Note": {"subject": "Invoice INV-2026-0412 approved", "body": "Your invoice was approved."},
}
