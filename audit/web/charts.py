"""Inline SVG charts for the audit pages: no script, no CDN, readable in an exported page too."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup

from flotilla.audit.stats import TrendPoint

__all__ = ["trend_svg"]

W, H, LEFT, RIGHT, TOP, BOTTOM = 640, 220, 44, 12, 14, 40
SERIES = (("first_try_rate", "first-try schema adherence", "#1f8a4c"), ("escalation_rate", "escalation", "#c0262d"))


def trend_svg(points: Sequence[TrendPoint], *, title: str) -> Markup:
    """First-try adherence and escalation rate (0–100 %) per bucket, as two lines with dots."""
    inner_w, inner_h = W - LEFT - RIGHT, H - TOP - BOTTOM
    step = inner_w / max(len(points) - 1, 1)

    def x(i: int) -> float:
        return LEFT + (i * step if len(points) > 1 else inner_w / 2)

    def y(rate: float) -> float:
        return TOP + inner_h * (1 - rate)

    parts = [f'<svg class="trend" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" role="img" aria-label="{escape(title)}" data-testid="trend-chart">',
             f"<title>{escape(title)}</title>"]
    for pct in (0, 25, 50, 75, 100):
        gy = y(pct / 100)
        parts.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{gy:.1f}" y2="{gy:.1f}" stroke="#e3e6ec"/>'
                     f'<text x="{LEFT - 6}" y="{gy + 4:.1f}" text-anchor="end" font-size="11" fill="#6b7386">{pct}%</text>')
    every = max(1, len(points) // 8)  # at most ~8 bucket labels
    for i, point in enumerate(points):
        if i % every == 0 or i == len(points) - 1:
            anchor = "start" if i == 0 and len(points) > 1 else ("end" if i == len(points) - 1 and len(points) > 1 else "middle")
            parts.append(f'<text x="{x(i):.1f}" y="{H - BOTTOM + 16}" text-anchor="{anchor}" font-size="11" fill="#6b7386">{escape(point.bucket)}</text>')
    for field, label, colour in SERIES:
        coords = [(x(i), y(v)) for i, p in enumerate(points) if (v := getattr(p, field)) is not None]
        if len(coords) > 1:
            path = " ".join(f"{cx:.1f},{cy:.1f}" for cx, cy in coords)
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}" data-series="{field}"/>')
        for (cx, cy), p in zip(coords, [p for p in points if getattr(p, field) is not None]):
            parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="3" fill="{colour}" data-series="{field}">'
                         f"<title>{escape(p.bucket)}: {label} {getattr(p, field):.0%} of {p.requests} steps</title></circle>")
    for n, (_field, label, colour) in enumerate(SERIES):
        lx = LEFT + n * 230
        parts.append(f'<rect x="{lx}" y="{H - 14}" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{lx + 14}" y="{H - 5}" font-size="12" fill="#1d2330">{label}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
