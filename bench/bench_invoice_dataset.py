"""What the labelled invoice dataset (datasets/invoices) asks of the built-in workflow, without a model.

Two readers go through the extract step's real policy (grounding, then the label reader:
agents/document_triage/labels.py) on every case of a split, scored with the dataset's own
scorers.yaml:

    code alone     the policy applied to an empty answer: what the label reader recovers by itself
    perfect model  the policy applied to the true extraction: what grounding and the label reader
                   keep of a perfect answer (the ceiling any model reaches through this workflow);
                   its decisions are recomputed through the real ledger server and policy

Also prints the decision mix and layouts per split. No model runs, so it takes seconds.

    .venv/bin/python bench/bench_invoice_dataset.py [--split eval]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATASET = ROOT / "datasets" / "invoices"
sys.path.insert(0, str(DATASET))

from flotilla.agents.document_triage.labels import ground_and_read_labels  # noqa: E402
from flotilla.agents.document_triage.schemas import Invoice  # noqa: E402
from flotilla.graphs.dataset import Case, load_cases  # noqa: E402
from flotilla.graphs.evaluation.scorers import load_scorers  # noqa: E402

EMPTY = {name: None for name in Invoice.model_fields} | {"line_items": []}


def through_policy(answer: dict[str, Any], case: Case) -> dict[str, Any]:
    invoice, _ = ground_and_read_labels(Invoice.model_validate(answer), {"input": case.input})
    return invoice.model_dump(mode="json")


def field_scores(cases: list[Case], got: list[dict[str, Any]]) -> dict[str, float]:
    scorers = load_scorers(DATASET / "scorers.yaml")
    totals: dict[str, float] = defaultdict(float)
    for case, answer in zip(cases, got):
        for name, want in case.expected["extract"].items():
            totals[name] += scorers.for_field(f"extract.{name}", want)(want, answer.get(name))
    return {name: value / len(cases) for name, value in totals.items()}


def by_tag(cases: list[Case], got: list[dict[str, Any]], key: str) -> dict[str, float]:
    scorers = load_scorers(DATASET / "scorers.yaml")
    sums: dict[str, list[float]] = defaultdict(list)
    for case, answer in zip(cases, got):
        fields = case.expected["extract"]
        score = sum(scorers.for_field(f"extract.{n}", w)(w, answer.get(n)) for n, w in fields.items()) / len(fields)
        for value in case.tag_values(key):
            sums[value].append(score)
    return {value: sum(s) / len(s) for value, s in sorted(sums.items())}


def decisions_of(cases: list[Case], extracted: list[dict[str, Any]]) -> list[str]:
    from generate import label_decisions  # the generator's labelling: real ledger server, real policy

    rows = [{"id": c.id, "input": c.input, "expected": {"extract": e}, "tags": []} for c, e in zip(cases, extracted)]
    asyncio.run(label_decisions(rows))
    return [row["expected"]["decide"]["decision"] for row in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description="dataset statistics and no-model ceilings")
    parser.add_argument("--split", default="eval", choices=("train", "eval"))
    args = parser.parse_args()
    for split in ("train", "eval"):
        cases = load_cases(DATASET / f"{split}.jsonl")
        mix = Counter(c.expected["decide"]["decision"] for c in cases)
        print(f"{split}: {len(cases)} cases; decisions " + ", ".join(f"{k} {v} ({v / len(cases):.0%})" for k, v in sorted(mix.items())))
    cases = load_cases(DATASET / f"{args.split}.jsonl")
    code_alone = [through_policy(EMPTY, c) for c in cases]
    perfect = [through_policy(c.expected["extract"], c) for c in cases]
    alone, ceiling = field_scores(cases, code_alone), field_scores(cases, perfect)
    print(f"\n{args.split} split, extract field accuracy (scorers.yaml): code alone | perfect model through grounding + labels")
    for name in alone:
        print(f"  {name:<16}{alone[name]:>8.1%} | {ceiling[name]:>6.1%}")
    print(f"  {'overall':<16}{sum(alone.values()) / len(alone):>8.1%} | {sum(ceiling.values()) / len(ceiling):>6.1%}")
    print("\nfield accuracy by layout (code alone | perfect model):")
    a, p = by_tag(cases, code_alone, "layout"), by_tag(cases, perfect, "layout")
    for layout in a:
        print(f"  {layout:<10}{a[layout]:>8.1%} | {p[layout]:>6.1%}")
    print("by number style:")
    a, p = by_tag(cases, code_alone, "numbers"), by_tag(cases, perfect, "numbers")
    for style in a:
        print(f"  {style:<10}{a[style]:>8.1%} | {p[style]:>6.1%}")
    got = decisions_of(cases, perfect)
    right = sum(g == c.expected["decide"]["decision"] for g, c in zip(got, cases))
    print(f"\ndecision accuracy of a perfect model through the workflow: {right}/{len(cases)} ({right / len(cases):.1%})")
    wrong = Counter((c.expected["decide"]["decision"], g) for g, c in zip(got, cases) if g != c.expected["decide"]["decision"])
    for (want, have), n in wrong.most_common():
        print(f"  expected {want}, got {have}: {n}")


if __name__ == "__main__":
    main()
