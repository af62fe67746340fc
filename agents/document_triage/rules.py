"""Deterministic checks and policy for document triage.

The specialists are small models: arithmetic and date sanity are computed here and shown to
them as facts (context hooks), and the decision is held to business invariants (policy hook)
so a weak or confused model can never approve an invoice that fails a hard check.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from flotilla.agents.document_triage.schemas import Decision, Verdict

__all__ = ["invoice_checks", "enforce_decision_policy"]

_CENTS = 0.01


def _parse_date(value: Any) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except (TypeError, ValueError):
        return None


def invoice_checks(state: dict[str, Any]) -> dict[str, Any]:
    """Facts about the extracted invoice, one entry per check: status and detail."""
    invoice = (state.get("outputs") or {}).get("extract") or {}
    facts: dict[str, Any] = {}

    missing = [f for f in ("vendor", "invoice_number", "total") if invoice.get(f) in (None, "")]
    facts["required_fields"] = {"status": "fail" if missing else "pass", "detail": f"missing: {', '.join(missing)}" if missing else "vendor, invoice number and total present"}

    amounts = [item.get("amount") for item in invoice.get("line_items") or []]
    subtotal = invoice.get("subtotal")
    if amounts and all(isinstance(a, (int, float)) for a in amounts) and isinstance(subtotal, (int, float)):
        summed = round(sum(amounts), 2)
        ok = abs(summed - subtotal) < _CENTS
        facts["line_items_sum"] = {"status": "pass" if ok else "fail", "detail": f"line items sum to {summed}, subtotal is {subtotal}"}
    else:
        facts["line_items_sum"] = {"status": "unknown", "detail": "line item amounts or subtotal missing"}

    total, tax = invoice.get("total"), invoice.get("tax") or 0
    if isinstance(total, (int, float)) and isinstance(subtotal, (int, float)) and isinstance(tax, (int, float)):
        expected = round(subtotal + tax, 2)
        ok = abs(expected - total) < _CENTS
        facts["total_matches"] = {"status": "pass" if ok else "fail", "detail": f"subtotal + tax = {expected}, total is {total}"}
    else:
        facts["total_matches"] = {"status": "unknown", "detail": "total, subtotal or tax missing"}

    issued, due = _parse_date(invoice.get("invoice_date")), _parse_date(invoice.get("due_date"))
    if issued and due:
        days = (due - issued).days
        ok = 0 <= days <= 120
        facts["due_date_sane"] = {"status": "pass" if ok else "fail", "detail": f"due {days} days after issue"}
    else:
        facts["due_date_sane"] = {"status": "unknown", "detail": "invoice or due date missing"}

    numbers = [invoice.get("invoice_number"), invoice.get("purchase_order")]
    dup = numbers[0] is not None and numbers[0] == numbers[1]
    facts["duplicate_fields"] = {"status": "fail" if dup else "pass", "detail": "invoice number equals PO number" if dup else "no duplicated identifiers"}
    return facts


def enforce_decision_policy(decision: Decision, state: dict[str, Any]) -> tuple[Decision, list[str]]:
    """A decision may only approve when every hard check passed; otherwise it is at most a hold.
    A document without vendor, number or total is not a complete invoice: a person looks at it,
    so it is held, whatever the model said."""
    facts = invoice_checks(state)
    if facts["required_fields"]["status"] != "pass" and decision.decision is not Verdict.HOLD:
        reason = f"not a complete invoice ({facts['required_fields']['detail']})"
        held = Decision(decision=Verdict.HOLD, reasons=[reason], confidence=min(decision.confidence, 0.5))
        return held, [f"policy: {decision.decision.value} changed to hold: {reason}"]
    failed = [name for name, fact in facts.items() if fact["status"] != "pass"]
    if decision.decision is Verdict.APPROVE and failed:
        reasons = [f"check {name} did not pass" for name in failed][:3]
        held = Decision(decision=Verdict.HOLD, reasons=reasons, confidence=min(decision.confidence, 0.5))
        return held, [f"policy: approve changed to hold because {', '.join(failed)} did not pass"]
    return decision, []
