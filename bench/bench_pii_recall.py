"""PII redaction quality on the labelled sets: how much of each entity is redacted, how much leaks.

    python bench/bench_pii_recall.py [--split dev|test|all] [--show]

The sets (guardrails/data/eval_pii_dev.txt, eval_pii_test.txt; tests/support/pii_set.py reads and scores
them) were written independently of the redactor and are not tuned on: business e-mails,
tickets, invoices, chat, JSON payloads, logs and agent answers, with every name, e-mail
address, phone number, card number, IBAN, US SSN and IP address marked, and look-alikes
(order numbers, VAT numbers, company and place names) left unmarked.

Two paths are scored, each with the default entities and threshold:
- **audit**: the redaction worker (`RedactionWorker`, the staged batch analysis) over the whole
  set as one batch — what reaches the audit store and the OTLP exporter under `redacted`;
- **rail**: `PresidioRail.redact`, text by text — the `presidio` rail at a model boundary.

Per entity: labels, redacted (no letter or digit of the value left), partial (some left), leaked
(all left) and recall = redacted / labels; then false positives (stretches removed that hold no
label) per 1,000 words. `--show` lists what leaked and what was removed wrongly.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.pii_set import SPLITS, LabelledText, load, score  # noqa: E402

OUTCOMES = ("redacted", "partial", "leaked")


def report(name: str, docs: list[LabelledText], redacted: list[str], show: bool) -> None:
    counts: dict[str, Counter[str]] = {}
    misses: list[str] = []
    false_positives: list[str] = []
    for doc, out in zip(docs, redacted):
        result = score(doc, out)
        for label, outcome in result.outcome.items():
            counts.setdefault(label[0], Counter())[outcome] += 1
            if outcome != "redacted":
                misses.append(f"  {outcome:8} {label[0]:13} {doc.value(label)!r}")
        false_positives += result.false_positives
    words = sum(len(doc.text.split()) for doc in docs)
    total: Counter[str] = sum(counts.values(), Counter())
    print(f"\n{name}: {len(docs)} texts, {words} words, {sum(total.values())} labelled values")
    print(f"  {'entity':14} {'labels':>6} {'redacted':>9} {'partial':>8} {'leaked':>7} {'recall':>7}")
    for entity, c in sorted(counts.items()) + [("all", total)]:
        n = sum(c.values())
        print(f"  {entity:14} {n:6d} {c['redacted']:9d} {c['partial']:8d} {c['leaked']:7d} {c['redacted'] / n:7.1%}")
    print(f"  false positives: {len(false_positives)} ({1000 * len(false_positives) / words:.1f} per 1,000 words)")
    if show:
        print("  not redacted:", *misses, sep="\n")
        print("  removed, not PII:", *(f"  {fp!r}" for fp in false_positives), sep="\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=[*SPLITS, "all"], default="all")
    parser.add_argument("--show", action="store_true", help="list each value not redacted and each false positive")
    args = parser.parse_args()

    from flotilla.guardrails.pii import PresidioRail
    from flotilla.guardrails.redaction_worker import RedactionWorker

    worker, rail = RedactionWorker(), PresidioRail()
    try:
        for split in SPLITS if args.split == "all" else (args.split,):
            docs = load(split)
            texts = [doc.text for doc in docs]
            started = time.perf_counter()
            audit = worker.redact_many(texts)
            audit_s = time.perf_counter() - started
            report(f"[{split}] audit (redaction worker, one batch; {audit_s:.1f} s wall)", docs, audit, args.show)
            rail.redact(texts[0])  # warm
            started = time.process_time()
            redacted = [rail.redact(t)[0] for t in texts]
            rail_ms = 1000 * (time.process_time() - started) / len(texts)
            report(f"[{split}] rail (PresidioRail.redact per text; {rail_ms:.1f} ms CPU a text)", docs, redacted, args.show)
    finally:
        worker.close()


if __name__ == "__main__":
    main()
