"""How amounts and dates are printed on business documents, both ways: value → printed forms, printed text → value.

Documents come in English, German and French conventions: 1,234.56 / 1.234,56 / 1 234,56 and
"5 December 2026" / "5. Dezember 2026" / "5 décembre 2026". Grounding asks whether a value's
printed forms occur in a document (`money_forms`, `date_forms`); the label reader turns what a
label points at back into a value (`parse_money`, `parse_date`).
"""

from __future__ import annotations

import re
from datetime import date, datetime

__all__ = ["MONEY", "money_forms", "parse_money", "date_forms", "parse_date"]

_MONTHS = {
    "en": ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"),
    "de": ("Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August", "September", "Oktober", "November", "Dezember"),
    "fr": ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre", "novembre", "décembre"),
}
# Any month name or its usual abbreviation → its number ("Dez", "déc", "Sept" included).
_MONTH_NUMBER: dict[str, int] = {}
for _names in _MONTHS.values():
    for _number, _name in enumerate(_names, start=1):
        _MONTH_NUMBER[_name.casefold()] = _number
        for _size in (3, 4):
            _MONTH_NUMBER.setdefault(_name.casefold()[:_size], _number)
_MONTH_NUMBER["mrz"] = 3

# An amount with two decimals, in any of the three conventions, not part of a longer number.
MONEY = re.compile(
    r"(?<![\w.,'])-?(?:"
    r"\d{1,3}(?:,\d{3})+\.\d{2}"            # 1,234.56
    r"|\d{1,3}(?:'\d{3})+\.\d{2}"           # 1'234.56 (Swiss)
    r"|\d{1,3}(?:\.\d{3})+,\d{2}"           # 1.234,56
    r"|\d{1,3}(?:[ \u00a0\u202f]\d{3})+[.,]\d{2}"  # 1 234,56 / 1 234.56
    r"|\d+[.,]\d{2}"                         # 1234.56 / 1234,56
    r")(?![\d]|[.,]\d)"
)


def money_forms(value: float) -> set[str]:
    """How an amount may be printed: 1234.5 → 1234.50, 1,234.50, 1.234,50, 1234,50, 1 234,50, 1'234.50 …"""
    english = f"{value:,.2f}"
    plain = f"{value:.2f}"
    continental = english.replace(",", "\0").replace(".", ",").replace("\0", ".")
    forms = {plain, english, continental, plain.replace(".", ","), english.replace(",", "'")}
    for space in (" ", "\u00a0", "\u202f"):
        forms |= {english.replace(",", space), continental.replace(".", space)}
    return forms


def parse_money(text: str) -> float:
    """A printed amount (as `MONEY` matches it) as a number: the last separator before two digits is the decimal point."""
    digits = re.sub(r"[^\d.,\-]", "", text)
    whole, fraction = digits[:-3], digits[-2:]
    return float(re.sub(r"[.,]", "", whole) + "." + fraction)


def date_forms(day: date) -> set[str]:
    """How a date may be printed, numerically and with English, German or French month names."""
    forms = {day.isoformat(), day.strftime("%d/%m/%Y"), day.strftime("%m/%d/%Y"), day.strftime("%d.%m.%Y"),
             day.strftime("%Y/%m/%d"), f"{day.day}.{day.month}.{day.year}", f"{day.day}/{day.month}/{day.year}"}
    for lang, names in _MONTHS.items():
        name = names[day.month - 1]
        for shown in {name, name[:3], name[:3] + "."}:
            forms |= {f"{day.day} {shown} {day.year}", f"{day.day:02d} {shown} {day.year}", f"{day.day}. {shown} {day.year}"}
            if lang == "en":
                forms |= {f"{shown} {day.day}, {day.year}", f"{shown} {day.day:02d}, {day.year}"}
        if lang == "fr" and day.day == 1:
            forms.add(f"1er {name} {day.year}")
    return forms


_NUMERIC_DATE = ("%Y-%m-%d", "%d.%m.%Y", "%d/%m/%Y", "%Y/%m/%d", "%d-%m-%Y")
_WORDY_DATE = re.compile(r"^(?:(?P<d1>\d{1,2})(?:st|nd|rd|th|er)?\.?\s+(?P<m1>[^\W\d_]+)\.?|(?P<m2>[^\W\d_]+)\.?\s+(?P<d2>\d{1,2})(?:st|nd|rd|th)?,?)\s+(?P<y>\d{4})\b")


def parse_date(text: str) -> str | None:
    """The ISO date a printed date starts `text` with, or None ("5. Dezember 2026 (netto)" → 2026-12-05)."""
    cleaned = text.strip()
    wordy = _WORDY_DATE.match(cleaned)
    if wordy:
        month = _MONTH_NUMBER.get((wordy["m1"] or wordy["m2"]).casefold())
        try:
            return date(int(wordy["y"]), month, int(wordy["d1"] or wordy["d2"])).isoformat() if month else None
        except ValueError:
            return None
    numeric = re.match(r"^\d{1,4}[-./]\d{1,2}[-./]\d{2,4}\b", cleaned)
    if numeric is None:
        return None
    for fmt in _NUMERIC_DATE:
        try:
            return datetime.strptime(numeric.group(0), fmt).date().isoformat()
        except ValueError:
            continue
    return None
