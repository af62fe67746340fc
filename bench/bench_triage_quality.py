"""How right is the built-in document triage on the embedded model? The bundled sample plus the
held-out invoices (tests/data/heldout_invoices.yaml, never used to tune prompts, labels or
rules), each run through the real runtime (embedded SmolLM2-135M, ledger MCP server, rails).

Prints per invoice the fields right, the decision and the run status, then field accuracy,
decision accuracy, succeeded vs needs_review, and whether any succeeded run carries degenerate
text (it must not), and how many of the model's values grounding and the label reader
corrected (the extract step's notes say which).

    python bench/bench_triage_quality.py
"""

from __future__ import annotations

import ast
import asyncio
import re
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
FIELDS = ("vendor", "invoice_number", "invoice_date", "due_date", "subtotal", "tax", "total")
SAMPLE_EXPECTED = {
    "vendor": "Northwind Office Supplies Ltd.", "invoice_number": "INV-2026-0412", "invoice_date": "2026-11-02",
    "due_date": "2026-12-02", "subtotal": 2279.00, "tax": 455.80, "total": 2734.80, "decision": "approve",
}


def cases() -> list[tuple[str, str, dict[str, Any]]]:
    heldout = yaml.safe_load((ROOT / "tests" / "data" / "heldout_invoices.yaml").read_text())["invoices"]
    sample = ("bundled-sample", (ROOT / "graphs" / "samples" / "invoice.txt").read_text(), SAMPLE_EXPECTED)
    return [sample, *((c["id"], c["text"], c["expected"]) for c in heldout)]


def same(field: str, got: Any, want: Any) -> bool:
    if want is None or got is None:
        return want is got
    if field in ("subtotal", "tax", "total"):
        return isinstance(got, (int, float)) and abs(got - want) < 0.005
    if field == "vendor":
        return str(got).casefold().rstrip(". ") == str(want).casefold().rstrip(". ")
    return str(got) == str(want)


_NOTE = re.compile(r"^(?:grounding|labels): (\w+) (.+?) (?:is not in the document|differs from)")


def model_answer(extract_step: dict[str, Any]) -> dict[str, Any]:
    """The model's own values before grounding and the label reader: the step's notes name each
    value they changed (the first note on a field holds what the model said)."""
    answer = dict(extract_step.get("output") or {})
    seen = set()
    for note in extract_step.get("notes") or []:
        found = _NOTE.match(note)
        if found and found.group(1) in FIELDS and found.group(1) not in seen:
            seen.add(found.group(1))
            answer[found.group(1)] = ast.literal_eval(found.group(2))
    return answer


def degenerate_fields(steps: list[dict[str, Any]]) -> list[str]:
    from flotilla.agents.degenerate import degenerate_reason, string_fields

    return [f"{s['agent']}.{path}" for s in steps for path, text in string_fields(s.get("output")) if degenerate_reason(text)]


async def main() -> None:
    os.environ.setdefault("FLOTILLA_DATA_DIR", tempfile.mkdtemp(prefix="flotilla-quality-"))
    from flotilla.graphs.catalog import load_workflow
    from flotilla.runtime.settings import load_settings
    from flotilla.runtime.wiring import build_runtime

    runtime = build_runtime(load_settings())
    spec = load_workflow("document_triage")
    right = total = decisions = 0
    statuses: dict[str, int] = {}
    degenerate_succeeded = corrections = model_right = 0
    ok_right = ok_fields = ok_decisions = ok_runs = 0
    uncaught: list[str] = []
    started = time.perf_counter()
    try:
        for name, text, expected in cases():
            result = await runtime.runner.run(spec, text, initiator="bench")
            statuses[result.status] = statuses.get(result.status, 0) + 1
            steps = {s["agent"]: s for s in result.steps}
            extracted = (steps.get("extract") or {}).get("output") or {}
            hits = [field for field in FIELDS if same(field, extracted.get(field), expected.get(field))]
            raw = model_answer(steps.get("extract") or {})
            model_right += sum(same(field, raw.get(field), expected.get(field)) for field in FIELDS)
            decision = ((steps.get("decide") or {}).get("output") or {}).get("decision")
            degenerate = degenerate_fields(result.steps)
            if result.status == "succeeded" and degenerate:
                degenerate_succeeded += 1
            right, total = right + len(hits), total + len(FIELDS)
            fixed = [n for n in (steps.get("extract") or {}).get("notes") or [] if n.startswith(("labels:", "grounding:"))]
            corrections += len(fixed)
            decisions += decision == expected["decision"]
            if result.status == "succeeded":
                ok_runs, ok_right, ok_fields = ok_runs + 1, ok_right + len(hits), ok_fields + len(FIELDS)
                ok_decisions += decision == expected["decision"]
                if len(hits) < len(FIELDS) or decision != expected["decision"]:
                    uncaught.append(f"{name} ({len(FIELDS) - len(hits)} fields wrong, decision {decision})")
            missed = ", ".join(f for f in FIELDS if f not in hits) or "-"
            print(f"{name:<30} fields {len(hits)}/{len(FIELDS)}  decision {decision or '-':<8} (want {expected['decision']:<7}) "
                  f"status {result.status:<12} corrected {len(fixed)}  missed: {missed}", flush=True)
    finally:
        await runtime.runner.aclose()
        runtime.telemetry.shutdown()
    n = len(cases())
    print(f"\nfield accuracy: {right}/{total} = {right / total:.2f}   decision accuracy: {decisions}/{n} = {decisions / n:.2f}")
    print("statuses: " + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())))
    print(f"succeeded runs only: fields {ok_right}/{ok_fields} = {ok_right / max(ok_fields, 1):.2f}, decisions {ok_decisions}/{ok_runs} = {ok_decisions / max(ok_runs, 1):.2f}")
    print(f"succeeded runs with a wrong field or decision (not caught): {len(uncaught)}: {'; '.join(uncaught) or '-'}")
    print(f"the model's own answer (before grounding and the label reader): {model_right}/{total} = {model_right / total:.2f} of fields right")
    print(f"model values corrected by grounding or the label reader: {corrections} ({corrections / n:.1f} per invoice)")
    print(f"succeeded runs with degenerate text: {degenerate_succeeded} (must be 0)")
    print(f"wall time: {time.perf_counter() - started:.0f} s for {n} invoices ({(time.perf_counter() - started) / n:.1f} s each, model loaded once)")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    asyncio.run(main())
