"""The deterministic steps of document triage: analyze, decide and write are computed, not generated.

What a 135M model is good for here is reading the invoice (the `extract` step, grounded in
the text). Arithmetic, a policy over the checks and a note from verified facts are better
done by code: they are always right, cost nothing, and never produce degenerate text. The
workflow declares them as function nodes, so every step record says what produced it.

    analyze  the invoice checks (rules.py) and the ledger checks (ledger_checks.py) as findings
    decide   approve only when every check passed; reject on a hard failure; else hold —
             the reasons are the failing checks' own sentences
    write    a note to the requester filled in from the extracted fields and the decision
"""

from __future__ import annotations

from typing import Any

from flotilla.agents.document_triage.ledger_checks import ledger_checks, vendor_blocked
from flotilla.agents.document_triage.rules import invoice_checks
from flotilla.agents.document_triage.schemas import Analysis, CheckName, Decision, Finding, Note, Verdict

__all__ = ["analyze_invoice", "decide_invoice", "write_note", "REJECTING_CHECKS"]

REJECTING_CHECKS = frozenset({CheckName.LINE_ITEMS_SUM, CheckName.TOTAL_MATCHES, CheckName.NOT_A_DUPLICATE})
"""A failure of one of these is a wrong invoice (it does not add up, it was received already):
rejected, as is any invoice of a blocked vendor. Any other failure (an unknown vendor, a
purchase order that does not match), or anything unknown, is a hold for a person."""
_VERB = {Verdict.APPROVE: "approved", Verdict.HOLD: "put on hold", Verdict.REJECT: "rejected"}
_SUBJECT = {Verdict.APPROVE: "approved", Verdict.HOLD: "on hold", Verdict.REJECT: "rejected"}


def analyze_invoice(state: dict[str, Any]) -> Analysis:
    facts = {**invoice_checks(state), **ledger_checks(state)}
    return Analysis(findings=[Finding(check=CheckName(name), status=fact["status"], detail=fact["detail"]) for name, fact in facts.items()])


def decide_invoice(state: dict[str, Any]) -> Decision:
    findings = [Finding.model_validate(f) for f in ((state.get("outputs") or {}).get("analyze") or {}).get("findings", [])]
    if not findings:
        return Decision(decision=Verdict.HOLD, reasons=["No checks were run on this document, so a person must look at it."], confidence=1.0)
    by_check = {f.check: f for f in findings}
    required = by_check.get(CheckName.REQUIRED_FIELDS)
    if required is not None and required.status != "pass":
        # Not a complete invoice: nothing else about it can be trusted enough to reject it.
        return Decision(decision=Verdict.HOLD, reasons=[f"This is not a complete invoice: {required.detail}"[:160]], confidence=1.0)
    rejecting = [f for f in findings if f.status == "fail" and (f.check in REJECTING_CHECKS or (f.check is CheckName.VENDOR_KNOWN and vendor_blocked(state)))]
    if rejecting:
        return Decision(decision=Verdict.REJECT, reasons=[f.detail for f in rejecting[:3]], confidence=1.0)
    open_points = [f for f in findings if f.status != "pass"]
    if open_points:
        return Decision(decision=Verdict.HOLD, reasons=[f.detail for f in open_points[:3]], confidence=1.0)
    return Decision(decision=Verdict.APPROVE, reasons=[f"All {len(findings)} checks passed: the amounts add up, the vendor is active and the purchase order matches."], confidence=1.0)


def write_note(state: dict[str, Any]) -> Note:
    outputs = state.get("outputs") or {}
    invoice, decision = outputs.get("extract") or {}, Decision.model_validate(outputs["decide"])
    number, vendor = invoice.get("invoice_number"), invoice.get("vendor")
    what = f"invoice {number}" if number else "the document you submitted"
    if vendor:
        what += f" from {vendor}"
    total, currency = invoice.get("total"), invoice.get("currency")
    if isinstance(total, (int, float)):
        what += f" for {currency + ' ' if currency else ''}{total:,.2f}"
    first = f"Your {what} has been {_VERB[decision.decision]}."
    why = " ".join(decision.reasons)
    after = {
        Verdict.APPROVE: "It will be paid on its due date.",
        Verdict.HOLD: "Accounts payable will look at it and may contact you.",
        Verdict.REJECT: "Please check it with the vendor and submit a corrected invoice.",
    }[decision.decision]
    body = f"{first} {why} {after}"
    if len(body) > 600:
        body = f"{first} {decision.reasons[0]} {after}"[:600]
    subject = f"Invoice {number}: {_SUBJECT[decision.decision]}" if number and len(str(number)) <= 40 else f"Your document: {_SUBJECT[decision.decision]}"
    return Note(subject=subject[:60], body=body)
