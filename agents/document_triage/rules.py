"""Deterministic checks and policy for document triage.

Arithmetic, date sanity and required fields are computed here, each as a status and one
sentence. The built-in workflow's analyze step reports them as findings (triage.py); a workflow
that lets models analyze and decide can show them as facts (`context:` hook) and hold a model's
decision to them (`enforce_decision_policy`, a `policy:` hook), so a weak or confused model can
never approve an invoice that fails a hard check.
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


def _money(value: float) -> str:
    return f"{value:,.2f}"


def invoice_checks(state: dict[str, Any]) -> dict[str, Any]:
    """Facts about the extracted invoice, one entry per check: status and a one-sentence detail."""
    invoice = (state.get("outputs") or {}).get("extract") or {}
    facts: dict[str, Any] = {}

    labels = {"vendor": "vendor", "invoice_number": "invoice number", "total": "total"}
    missing = [label for f, label in labels.items() if invoice.get(f) in (None, "")]
    facts["required_fields"] = (
        {"status": "fail", "detail": f"The document shows no {_joined(missing)}."}
        if missing
        else {"status": "pass", "detail": "The vendor, invoice number and total are all present."}
    )

    amounts = [item.get("amount") for item in invoice.get("line_items") or []]
    subtotal = invoice.get("subtotal")
    if amounts and all(isinstance(a, (int, float)) for a in amounts) and isinstance(subtotal, (int, float)):
        summed = round(sum(amounts), 2)
        ok = abs(summed - subtotal) < _CENTS
        facts["line_items_sum"] = {
            "status": "pass" if ok else "fail",
            "detail": f"The line items add up to the subtotal of {_money(subtotal)}."
            if ok
            else f"The line items add up to {_money(summed)}, but the subtotal is {_money(subtotal)}.",
        }
    else:
        facts["line_items_sum"] = {"status": "unknown", "detail": "The line item amounts or the subtotal could not be read, so their sum was not checked."}

    total, tax = invoice.get("total"), invoice.get("tax") or 0
    if isinstance(total, (int, float)) and isinstance(subtotal, (int, float)) and isinstance(tax, (int, float)):
        expected = round(subtotal + tax, 2)
        ok = abs(expected - total) < _CENTS
        facts["total_matches"] = {
            "status": "pass" if ok else "fail",
            "detail": f"Subtotal {_money(subtotal)} plus tax {_money(tax)} equals the total of {_money(total)}."
            if ok
            else f"Subtotal {_money(subtotal)} plus tax {_money(tax)} is {_money(expected)}, but the total is {_money(total)}.",
        }
    else:
        facts["total_matches"] = {"status": "unknown", "detail": "The total, subtotal or tax could not be read, so the total was not checked."}

    issued, due = _parse_date(invoice.get("invoice_date")), _parse_date(invoice.get("due_date"))
    if issued and due:
        days = (due - issued).days
        ok = 0 <= days <= 120
        facts["due_date_sane"] = {
            "status": "pass" if ok else "fail",
            "detail": f"The invoice is due {days} days after it was issued."
            if ok
            else f"The due date is {days} days after the invoice date, outside the 0 to 120 days allowed.",
        }
    else:
        facts["due_date_sane"] = {"status": "unknown", "detail": "The invoice date or the due date could not be read."}

    numbers = [invoice.get("invoice_number"), invoice.get("purchase_order")]
    dup = numbers[0] is not None and numbers[0] == numbers[1]
    facts["duplicate_fields"] = (
        {"status": "fail", "detail": "The invoice number is the same as the purchase order number."}
        if dup
        else {"status": "pass", "detail": "The invoice and purchase order numbers are distinct."}
    )
    return facts


def _joined(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


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
