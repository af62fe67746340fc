"""`verify:` checks of the built-in triage workflow that need more than an expression."""

from __future__ import annotations

from typing import Any

__all__ = ["required_fields_read"]

REQUIRED = ("vendor", "invoice_number", "total")


def required_fields_read(output: dict[str, Any], state: dict[str, Any]) -> bool | str:
    """A required field the model did give, but grounding removed (not in the document), is a
    misread, not a document without it: the later steps would tell the requester "the document
    shows no vendor". Fail, so the step escalates or goes to review."""
    answer = state.get("answer") or {}
    dropped = [f for f in REQUIRED if answer.get(f) is not None and output.get(f) is None]
    if dropped:
        return f"the model's {', '.join(dropped)} {'is' if len(dropped) == 1 else 'are'} not in the document (removed by grounding): misread"
    return True
