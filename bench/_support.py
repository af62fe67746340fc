"""What several benches set up the same way: the scripted invoice answer, the stub-model project
(flotilla.yaml whose aliases all point at one stub OpenAI-compatible server, and the environment
that runs `flotilla` against it), rails off, and percentiles.

Not a bench itself (`python -m bench` runs only bench_*.py). Temporal dev server and worker
helpers are in tests/support/temporal.py, shared with the tests.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["REPO", "INVOICE_ANSWER", "TRIAGE_ALIASES", "RAILS_OFF", "pct", "stub_models_yaml", "project_env"]

REPO = Path(__file__).resolve().parents[1]

INVOICE_ANSWER = {
    "vendor": "Northwind Office Supplies Ltd.", "invoice_number": "INV-2026-0412", "invoice_date": "2026-11-02",
    "due_date": "2026-12-02", "purchase_order": "PO-7781", "currency": "GBP",
    "line_items": [
        {"description": "A4 copier paper", "quantity": 40, "unit_price": 24.5, "amount": 980.0},
        {"description": "Toner cartridge", "quantity": 12, "unit_price": 61.0, "amount": 732.0},
        {"description": "Office chair", "quantity": 3, "unit_price": 189.0, "amount": 567.0},
    ],
    "subtotal": 2279.0, "tax": 455.8, "total": 2734.8,
}
"""The extract step's right answer for graphs/samples/invoice.txt (a scripted model replies with it)."""

TRIAGE_ALIASES = ("specialist-extract", "specialist-analyze", "specialist-decide", "specialist-write", "frontier")
"""The model aliases the document-triage workflows use."""

RAILS_OFF = {name: {"enabled": False} for name in ("presidio", "yara", "injection_classifier", "content_safety", "tool_screen", "llama_guard", "nemo")}


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of `values`, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def stub_models_yaml(url: str, aliases: tuple[str, ...] = TRIAGE_ALIASES) -> list[str]:
    """flotilla.yaml lines of a `models:` section sending every alias to the stub server at `url`."""
    lines = ["models:"]
    for alias in aliases:
        lines += [f"  {alias}:", "    provider: openai-compatible", f"    base_url: {url}/v1", "    model: stub"]
    return lines


def project_env(tmp: Path) -> dict[str, str]:
    """The environment of a `flotilla` subprocess using tmp/flotilla.yaml, tmp/data and tmp/cache (and this checkout)."""
    return {
        **os.environ,
        "FLOTILLA_CONFIG": str(tmp / "flotilla.yaml"),
        "FLOTILLA_DATA_DIR": str(tmp / "data"),
        "FLOTILLA_CACHE_DIR": str(tmp / "cache"),
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
