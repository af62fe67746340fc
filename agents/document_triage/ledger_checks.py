"""Checks of an invoice against the buyer's ledger, from what the workflow's tool nodes found.

The tool nodes (`vendor`, `purchase_order`, `prior_invoices` in graphs/document_triage.yaml)
call the ledger MCP server with values the extract step read; their outputs — or
`{"error": …}` when a call failed — are the evidence here. Evidence that could not be
gathered makes a check `unknown`, never `pass`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ledger_checks", "vendor_blocked", "VENDOR_NODE", "PURCHASE_ORDER_NODE", "PRIOR_INVOICES_NODE"]

VENDOR_NODE = "vendor"
PURCHASE_ORDER_NODE = "purchase_order"
PRIOR_INVOICES_NODE = "prior_invoices"
_CENTS = 0.01
_OPEN_ORDERS = ("open", "partially_invoiced")


def _check(status: str, detail: str) -> dict[str, str]:
    return {"status": status, "detail": detail}


def _matched_vendor(invoice: dict[str, Any], found: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, str]]:
    name = invoice.get("vendor")
    if not name:
        return None, _check("unknown", "The document names no vendor to look up in the vendor master.")
    if "error" in found or not isinstance(found.get("vendors"), list):
        return None, _check("unknown", f"The vendor master could not be searched for {name}.")
    vendors = found["vendors"]
    exact = [v for v in vendors if str(v.get("name", "")).casefold() == name.casefold()]
    if len(exact) == 1 or len(vendors) == 1:
        vendor = (exact or vendors)[0]
    elif not vendors:
        return None, _check("fail", f"{name} is not in the vendor master.")
    else:
        return None, _check("unknown", f"{name} matches {len(vendors)} vendors in the vendor master, so it is not clear which one.")
    status = vendor.get("status")
    if status == "active":
        return vendor, _check("pass", f"{vendor['name']} is an active vendor ({vendor['vendor_id']}).")
    return vendor, _check("fail", f"{vendor['name']} is {status} in the vendor master ({vendor['vendor_id']}).")


def _purchase_order(invoice: dict[str, Any], found: dict[str, Any], vendor: dict[str, Any] | None) -> dict[str, str]:
    number = invoice.get("purchase_order")
    if not number:
        return _check("unknown", "The invoice quotes no purchase order.")
    if "error" in found:
        if "no purchase order" in str(found["error"].get("message", "")):
            return _check("fail", f"Purchase order {number} is not in the ledger.")
        return _check("unknown", f"Purchase order {number} could not be looked up in the ledger.")
    problems = []
    if vendor is not None and found.get("vendor_id") != vendor.get("vendor_id"):
        problems.append(f"it was raised for {found.get('vendor_name')}, not {vendor.get('name')}")
    if found.get("status") not in _OPEN_ORDERS:
        problems.append(f"it is {found.get('status')}")
    currency = invoice.get("currency")
    if currency and found.get("currency") and currency != found["currency"]:
        problems.append(f"it is in {found['currency']}, the invoice in {currency}")
    subtotal, net = invoice.get("subtotal"), found.get("net_total")
    if isinstance(subtotal, (int, float)) and isinstance(net, (int, float)) and abs(subtotal - net) >= _CENTS:
        problems.append(f"its net total is {net:,.2f}, the invoice subtotal {subtotal:,.2f}")
    if problems:
        return _check("fail", f"Purchase order {number} does not match: {'; '.join(problems)}."[:160])
    return _check("pass", f"Purchase order {number} is {found.get('status')} and matches the vendor, currency and subtotal.")


def _prior_invoices(invoice: dict[str, Any], found: dict[str, Any], vendor: dict[str, Any] | None) -> dict[str, str]:
    number = invoice.get("invoice_number")
    if not number:
        return _check("unknown", "The invoice has no number, so it was not checked for duplicates.")
    if "error" in found or not isinstance(found.get("invoices"), list):
        return _check("unknown", f"The ledger could not be searched for earlier invoices numbered {number}.")
    same = [i for i in found["invoices"] if vendor is None or i.get("vendor_id") == vendor.get("vendor_id")]
    if same:
        first = same[0]
        return _check("fail", f"Invoice {number} was already received on {first.get('invoice_date')} and is {first.get('status')}.")
    return _check("pass", f"No invoice numbered {number} has been received before.")


def ledger_checks(state: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The vendor, purchase-order and duplicate checks, each with a status and one sentence."""
    outputs = state.get("outputs") or {}
    invoice = outputs.get("extract") or {}
    vendor, vendor_check = _matched_vendor(invoice, outputs.get(VENDOR_NODE) or {"error": {}})
    return {
        "vendor_known": vendor_check,
        "purchase_order_matches": _purchase_order(invoice, outputs.get(PURCHASE_ORDER_NODE) or {"error": {}}, vendor),
        "not_a_duplicate": _prior_invoices(invoice, outputs.get(PRIOR_INVOICES_NODE) or {"error": {}}, vendor),
    }


def vendor_blocked(state: dict[str, Any]) -> bool:
    """The invoice's vendor is in the vendor master and blocked: nothing of it may be paid."""
    outputs = state.get("outputs") or {}
    vendor, _ = _matched_vendor(outputs.get("extract") or {}, outputs.get(VENDOR_NODE) or {"error": {}})
    return vendor is not None and vendor.get("status") == "blocked"
