"""The self-contained HTML eval report: inline SVG charts, no script, nothing fetched."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

__all__ = ["render_html", "write_html"]

TEMPLATES = Path(__file__).parent / "templates"
PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2")
WIDTH, PLOT_LEFT, PLOT_RIGHT = 720, 70, 690


def _nice_max(value: float) -> float:
    """The axis end: 1, 2 or 5 times a power of ten, at or above `value`."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= value)


def _x(value: float, top: float) -> float:
    return round(PLOT_LEFT + (PLOT_RIGHT - PLOT_LEFT) * (value / top if top else 0), 1)


def _accuracy_vs_cost(summary: dict[str, Any], colours: dict[str, str]) -> dict[str, Any]:
    height, top_y, bottom_y = 300, 20, 260
    costs = [f["cost_per_case_usd"] for f in summary.values()]
    top = _nice_max(max(costs)) if any(costs) else 1.0
    points = []
    for name, figures in summary.items():
        accuracy = figures["accuracy"] or 0.0
        points.append(
            {
                "config": name,
                "colour": colours[name],
                "x": _x(figures["cost_per_case_usd"], top),
                "y": round(bottom_y - (bottom_y - top_y) * accuracy, 1),
                "label": f"{name}: {accuracy * 100:.1f}% at ${figures['cost_per_case_usd']:.6f}/case",
                "right": _x(figures["cost_per_case_usd"], top) > WIDTH / 2,  # label to the left of the point
            }
        )
    y_ticks = [{"y": round(bottom_y - (bottom_y - top_y) * t / 4, 1), "label": f"{t * 25}%"} for t in range(5)]
    x_ticks = [{"x": _x(top * t / 4, top), "label": f"${top * t / 4:.2g}"} for t in range(5)]
    return {"height": height, "top": top_y, "bottom": bottom_y, "points": points, "y_ticks": y_ticks, "x_ticks": x_ticks}


def _latency(summary: dict[str, Any], colours: dict[str, str]) -> dict[str, Any]:
    row_h = 56
    slowest = max((max(f["latencies_ms"], default=0) for f in summary.values()), default=0)
    top = _nice_max(slowest / 1000) if slowest else 1.0
    rows = []
    for i, (name, figures) in enumerate(summary.items()):
        y = 38 + i * row_h
        rows.append(
            {
                "config": name,
                "colour": colours[name],
                "y": y,
                "dots": [{"x": _x(ms / 1000, top), "title": f"{ms:.0f} ms"} for ms in figures["latencies_ms"]],
                "p50": _x((figures["p50_ms"] or 0) / 1000, top),
                "p99": _x((figures["p99_ms"] or 0) / 1000, top),
                "label": f"p50 {((figures['p50_ms'] or 0) / 1000):.2f} s · p99 {((figures['p99_ms'] or 0) / 1000):.2f} s",
            }
        )
    height = 60 + len(rows) * row_h
    x_ticks = [{"x": _x(top * t / 4, top), "label": f"{top * t / 4:.3g} s"} for t in range(5)]
    return {"height": height, "rows": rows, "x_ticks": x_ticks, "axis_y": height - 25}


def _fields(summary: dict[str, Any], colours: dict[str, str]) -> dict[str, Any]:
    names = list(summary)
    fields = sorted({f for figures in summary.values() for f in figures["fields"]})
    bar_h, gap = 12, 10
    group_h = bar_h * len(names) + gap
    groups = []
    for i, field in enumerate(fields):
        y = 10 + i * group_h
        bars = []
        for j, name in enumerate(names):
            value = summary[name]["fields"].get(field)
            bars.append(
                {
                    "config": name,
                    "colour": colours[name],
                    "y": y + j * bar_h,
                    "width": round((WIDTH - 200 - 50) * (value or 0), 1),  # room left for the value
                    "value": "–" if value is None else f"{value * 100:.0f}%",
                }
            )
        groups.append({"field": field, "y": y + bar_h * len(names) / 2 + 4, "bars": bars})
    return {"height": 20 + len(fields) * group_h, "groups": groups, "left": 200}


def render_html(report: dict[str, Any]) -> str:
    summary = report["summary"]
    colours = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(summary)}
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
    return env.get_template("report.html").render(
        report=report,
        colours=colours,
        width=WIDTH,
        scatter=_accuracy_vs_cost(summary, colours),
        latency=_latency(summary, colours),
        fields=_fields(summary, colours),
    )


def write_html(report: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(report), encoding="utf-8")
    return path
