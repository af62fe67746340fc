"""The labelled PII sets (guardrails/data/eval_pii_*.txt) and how a redaction of them is scored.

    from tests.support.pii_set import load, score
    for doc in load("test"): doc.text, doc.labels      # labels: (entity, start, end)
    outcome = score(doc, redacted_text)                # per label: redacted / partial / leaked

A set file is records separated by `===` lines, each a text with its PII marked inline as
`[[ENTITY:value]]`; the text is the record with the markup removed. Scoring compares the text
with its redaction character by character (placeholders such as `<PERSON>` matching nothing):
a label is *redacted* when none of its letters or digits survive, *leaked* when all do,
*partial* otherwise (e.g. "Maria <PERSON>": the first name got through). A stretch the
redaction removed that overlaps no label is a *false positive* (whitespace and punctuation
changes, as re-serialised JSON makes, are not counted).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from pathlib import Path

__all__ = ["LabelledText", "Score", "load", "score", "SPLITS"]

DATA = Path(__file__).resolve().parents[2] / "guardrails" / "data"
SPLITS = ("dev", "test")
_MARK = re.compile(r"\[\[([A-Z_]+):(.+?)\]\]")
_PLACEHOLDER = re.compile(r"<[A-Z_]+>")
_GONE = "\x00"  # stands for a placeholder in the redacted text: it matches no character of the original


@dataclass(frozen=True)
class LabelledText:
    text: str
    labels: tuple[tuple[str, int, int], ...]
    """(entity, start, end) in `text`."""

    def value(self, label: tuple[str, int, int]) -> str:
        return self.text[label[1]: label[2]]


@dataclass
class Score:
    outcome: dict[tuple[str, int, int], str] = field(default_factory=dict)
    """Each label's outcome: "redacted", "partial" or "leaked"."""
    false_positives: list[str] = field(default_factory=list)
    """Original stretches the redaction removed that overlap no label."""


def parse(record: str) -> LabelledText:
    text, labels, at = [], [], 0
    for match in _MARK.finditer(record):
        text.append(record[at: match.start()])
        start = sum(map(len, text))
        text.append(match.group(2))
        labels.append((match.group(1), start, start + len(match.group(2))))
        at = match.end()
    text.append(record[at:])
    joined = "".join(text)
    if "[[" in joined or "]]" in joined:
        raise ValueError(f"unbalanced markup in record: {record[:80]!r}")
    return LabelledText(joined, tuple(labels))


def load(split: str) -> list[LabelledText]:
    lines = [line for line in (DATA / f"eval_pii_{split}.txt").read_text().splitlines() if not line.startswith("# ")]
    records = "\n".join(lines).split("\n===\n")
    return [parse(record.strip("\n")) for record in records if record.strip()]


def score(doc: LabelledText, redacted: str) -> Score:
    kept = [False] * len(doc.text)
    matcher = SequenceMatcher(None, doc.text, _PLACEHOLDER.sub(_GONE, redacted), autojunk=False)
    for a, _, size in matcher.get_matching_blocks():
        kept[a: a + size] = [True] * size
    result = Score()
    for label in doc.labels:
        _, start, end = label
        chars = [kept[i] for i in range(start, end) if doc.text[i].isalnum()]
        result.outcome[label] = "leaked" if all(chars) else "redacted" if not any(chars) else "partial"
    for tag, a0, a1, _, _ in matcher.get_opcodes():
        removed = doc.text[a0:a1]
        if tag in ("replace", "delete") and any(c.isalnum() for c in removed):
            if not any(start < a1 and a0 < end for _, start, end in doc.labels):
                result.false_positives.append(removed)
    return result
