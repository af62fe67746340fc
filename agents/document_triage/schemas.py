"""Output schemas of the document-triage agents.

Bounds on lengths and counts are part of the contract: they keep constrained decoding on a
small model finite and make the JSON schema say what a valid answer looks like.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["LineItem", "Invoice", "CheckName", "CheckStatus", "Finding", "Analysis", "Verdict", "Decision", "Note"]

ShortText = Annotated[str, Field(max_length=60)]
IsoDate = Annotated[str, Field(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LineItem(_Strict):
    description: Annotated[str, Field(max_length=48)]
    quantity: float | None
    unit_price: float | None
    amount: float | None


class Invoice(_Strict):
    """What the extract agent reads off a supplier invoice; null where the text has nothing."""

    vendor: ShortText | None
    invoice_number: Annotated[str, Field(max_length=40)] | None
    invoice_date: IsoDate | None
    due_date: IsoDate | None
    purchase_order: Annotated[str, Field(max_length=40)] | None
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] | None
    line_items: Annotated[list[LineItem], Field(max_length=5)]
    subtotal: float | None
    tax: float | None
    total: float | None


class CheckName(StrEnum):
    LINE_ITEMS_SUM = "line_items_sum"
    TOTAL_MATCHES = "total_matches"
    DUE_DATE_SANE = "due_date_sane"
    REQUIRED_FIELDS = "required_fields"
    DUPLICATE_FIELDS = "duplicate_fields"
    VENDOR_KNOWN = "vendor_known"
    PURCHASE_ORDER_MATCHES = "purchase_order_matches"
    NOT_A_DUPLICATE = "not_a_duplicate"


class CheckStatus(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    UNKNOWN = "unknown"


class Finding(_Strict):
    check: CheckName
    status: CheckStatus
    detail: Annotated[str, Field(max_length=160)]
    """One sentence a person reads: what was checked and what was found."""


class Analysis(_Strict):
    findings: Annotated[list[Finding], Field(max_length=len(CheckName))]


class Verdict(StrEnum):
    APPROVE = "approve"
    HOLD = "hold"
    REJECT = "reject"


class Decision(_Strict):
    decision: Verdict
    reasons: Annotated[list[Annotated[str, Field(max_length=160)]], Field(min_length=1, max_length=3)]
    confidence: Annotated[float, Field(ge=0, le=1)]


class Note(_Strict):
    subject: ShortText
    body: Annotated[str, Field(max_length=600)]
