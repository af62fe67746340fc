"""Is a value in the document? The lookups behind grounding, for any agent and any field.

A small model fills a schema even when the text has nothing to fill it with. These helpers
say whether a value it reports can be found in the input: text (whole, or a long enough
word prefix), money and quantities (as printed, not inside a longer number, date or id),
and dates (in the usual printed forms).
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from flotilla.agents.printed import date_forms, money_forms

__all__ = ["normalise", "grounded_text", "grounded_number", "grounded_date", "in_source"]

MIN_GROUNDED_CHARS = 8
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).casefold()


def grounded_text(value: str | None, source: str) -> str | None:
    """The value if the (normalised) source contains it, else its longest word prefix it contains."""
    if not value:
        return None
    if normalise(value) in source:
        return value
    words = value.split()
    for end in range(len(words) - 1, 0, -1):
        prefix = " ".join(words[:end]).rstrip(",;:")
        if len(prefix) >= MIN_GROUNDED_CHARS and normalise(prefix) in source:
            return prefix
    return None


def _number_forms(value: float, *, money: bool) -> set[str]:
    # Money is printed with cents on an invoice; a bare "12" is more likely a quantity or a date part.
    forms = money_forms(value)
    if not money and float(value).is_integer():
        forms.add(str(int(value)))
    return forms


def grounded_number(value: float | None, source: str, *, money: bool = True) -> float | None:
    if value is None:
        return None
    # Not part of a longer number (1,234.56 holds 234.56), a date (2026-12-02) or an identifier (INV-2026-0412).
    pattern = r"(?<![\w.\-/])(?<!\d,)(?<!\d'){}(?![\w\-/]|[.,]\d)"
    return value if any(re.search(pattern.format(re.escape(f)), source) for f in _number_forms(value, money=money)) else None


def grounded_date(value: str | None, source: str) -> str | None:
    try:
        day = date.fromisoformat(value) if value else None
    except ValueError:
        return None
    if day is None:
        return None
    return value if any(normalise(f) in source for f in date_forms(day)) else None


def in_source(value: Any, source: str) -> bool:
    """Whether one value (text, number or ISO date) is found whole in the normalised source."""
    if value is None or isinstance(value, bool):
        return True  # nothing claimed
    if isinstance(value, (int, float)):
        return grounded_number(float(value), source, money=not float(value).is_integer()) is not None
    text = str(value)
    if _ISO_DATE.match(text):
        return grounded_date(text, source) is not None
    return bool(text.strip()) and normalise(text) in source
