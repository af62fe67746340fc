"""Many texts through one rails pipeline: JSON lines in, one JSON result per line out.

The engines load once and serve every line (`flotilla guard check --jsonl`), so checking a
stream costs the engines' per-text time, not a process start and a model load per text.

Input, one per line (blank lines are skipped):

    {"text": "…", "point": "tool-result", "id": "doc-7"}    point and id optional
    "just a text"                                           a JSON string: checked at the default point

Output, one per input line, in order:

    {"line": 1, "id": "doc-7", "point": "input", "verdict": "allow" | "redact" | "quarantine" | "block",
     "allowed": true, "engine": …, "rule": …, "score": …, "latency_ms": …, "text": …, "engines": […]}

`engine`, `rule` and `score` are those of the deciding engine (the one that blocked, or the
last that changed the text; null when every engine allowed it unchanged). `text` is there only
when an engine changed it (PII redacted, a tool result quarantined); `engines` lists each enabled
engine's own verdict. A line that cannot be read becomes
`{"line": N, "error": {"code": "invalid_line", "message": …}}` and the stream goes on.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

from flotilla.guardrails.base import RailPoint, Verdict
from flotilla.guardrails.pipeline import Guardrails, RailsReport

__all__ = ["check_lines", "result_line", "POINTS"]

POINTS = tuple(p.value for p in RailPoint)


class _BadLine(Exception):
    pass


def _parse(raw: bytes | str, default_point: RailPoint) -> tuple[str, RailPoint, Any]:
    try:
        line = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as exc:
        raise _BadLine(f"not UTF-8 (byte {exc.start} is 0x{raw[exc.start]:02x})") from None
    try:
        item = json.loads(line)
    except json.JSONDecodeError as exc:
        raise _BadLine(f'not JSON ({exc.msg} at column {exc.colno}); give {{"text": "…"}} or a JSON string') from None
    if isinstance(item, str):
        return item, default_point, None
    if not isinstance(item, dict):
        raise _BadLine(f'a JSON {type(item).__name__}; give {{"text": "…"}} or a JSON string')
    text, point = item.get("text"), item.get("point", default_point.value)
    if not isinstance(text, str):
        raise _BadLine('"text" is missing or not a string')
    if point not in POINTS:
        raise _BadLine(f'"point" is {point!r}; use one of: {", ".join(POINTS)}')
    return text, RailPoint(point), item.get("id")


def _deciding(report: RailsReport) -> Verdict | None:
    if report.blocked_by is not None:
        return report.blocked_by
    changed = [v for v in report.verdicts if v.text is not None]
    return changed[-1] if changed else None


def result_line(report: RailsReport, *, line: int, item_id: Any = None) -> dict[str, Any]:
    """One output line for one checked text (the module docstring describes the fields)."""
    decided = _deciding(report)
    if decided is None:
        verdict = "allow"
    elif not report.allowed:
        verdict = "block"
    else:
        verdict = "quarantine" if decided.attributes.get("quarantined") else "redact"
    out: dict[str, Any] = {"line": line, **({"id": item_id} if item_id is not None else {}), "point": report.point.value,
                           "verdict": verdict, "allowed": report.allowed,
                           "engine": decided.engine if decided else None, "rule": decided.rule if decided else None,
                           "score": None if decided is None or decided.score is None else round(decided.score, 4),
                           "latency_ms": round(report.latency_ms, 3)}
    if decided is not None and decided.detail:
        out["detail"] = decided.detail
    if report.allowed and decided is not None:
        out["text"] = report.text
    out["engines"] = [
        {"engine": v.engine, "rule": v.rule, "allowed": v.allowed, "score": None if v.score is None else round(v.score, 4),
         "latency_ms": round(v.latency_ms, 3)}
        for v in report.verdicts
        if v.enabled  # engines that are off say so in `flotilla guard engines`, not on every line
    ]
    return out


async def check_lines(
    rails: Guardrails, lines: Iterable[bytes | str], *, point: RailPoint = RailPoint.INPUT, workflow: str | None = None
) -> AsyncIterator[dict[str, Any]]:
    """Check each line's text with the same (already built) engines; yield one result per non-blank line."""
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            text, at, item_id = _parse(raw, point)
        except _BadLine as exc:
            yield {"line": number, "error": {"code": "invalid_line", "message": f"line {number}: {exc}"}}
            continue
        report = await rails.report(at, text, workflow=workflow)
        yield result_line(report, line=number, item_id=item_id)
