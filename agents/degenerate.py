"""Degenerate text: what a small model writes when it loses the thread.

Schema-valid is not sensible: constrained decoding guarantees the JSON, not the words, and a
135M model fills a string field with `fie_de_fie_de_fie…` happily. Three signs, each cheap
(microseconds on a 300-character field):

- a fragment repeated back to back (`_de_fie` three times or more, covering much of the text);
- text that is mostly one token (`de de fie de de de`);
- runaway repetition: many tokens, few distinct ones.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

__all__ = ["degenerate_reason", "string_fields"]

MIN_CHARS = 16
"""Shorter text (an id, a date, a name) is too short to judge."""
_RUN = re.compile(r"(.{2,40}?)\1{2,}", re.S)
_TOKEN = re.compile(r"[^\W_]+")


def degenerate_reason(text: str) -> str | None:
    """Why `text` is degenerate, or None when it reads as ordinary text. The reason gives sizes and
    counts, never the text itself: it is flotilla's message, and the text is the model's content."""
    if len(text) < MIN_CHARS:
        return None
    for run in _RUN.finditer(text):
        fragment = run.group(1)
        covered = run.end() - run.start()
        # A ruler of dashes or dots is layout, not a model losing the thread.
        times = covered // len(fragment)
        # Three times must cover half the text; four or more, a third of it.
        share = 0.5 if times == 3 else 0.3
        if re.search(r"[^\W\d_]", fragment) and covered >= max(MIN_CHARS, share * len(text)):
            return f"repeats a {len(fragment)}-character fragment {times} times ({covered} of {len(text)} characters)"
    tokens = _TOKEN.findall(text.casefold())
    if len(tokens) >= 8:
        counts = Counter(tokens)
        (top, top_count), *rest = counts.most_common(2)
        if top_count / len(tokens) >= 0.4:
            return f"is mostly one word: {top_count} of its {len(tokens)} words are the same"
        if rest and (top_count + rest[0][1]) / len(tokens) >= 0.7:
            return f"alternates two words: they are {top_count + rest[0][1]} of its {len(tokens)} words"
        if len(tokens) >= 16 and len(counts) / len(tokens) < 0.3:
            return f"runs away: {len(tokens)} words but only {len(counts)} different ones"
    return None


def string_fields(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(`path`, text) for every string in a JSON value (`reasons.1`, `findings.0.detail`)."""
    if isinstance(value, str):
        yield path or "output", value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from string_fields(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from string_fields(item, f"{path}.{index}" if path else str(index))
