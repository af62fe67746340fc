"""The Jinja2 environment shared by the web page and the HTML export."""

from __future__ import annotations

import json
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

__all__ = ["environment", "render", "TEMPLATES", "STATIC"]

TEMPLATES = Path(__file__).parent / "web" / "templates"
STATIC = Path(__file__).parent / "web" / "static"


def _ms(value: float | None) -> str:
    if value is None:
        return "–"
    if value >= 60_000:
        return f"{value / 60_000:.1f} min"
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    return f"{value:.1f} ms" if value < 10 else f"{value:.0f} ms"


def _when(value: str | None) -> str:
    if not value:
        return "–"
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return value


def _pretty(value: Any) -> str:
    if isinstance(value, str):
        try:
            return json.dumps(json.loads(value), indent=2, ensure_ascii=False)
        except ValueError:
            return value
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


@cache
def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
    env.filters["ms"] = _ms
    env.filters["when"] = _when
    env.filters["pretty"] = _pretty
    env.globals["inline_css"] = lambda: (STATIC / "audit.css").read_text(encoding="utf-8")
    return env


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)
