"""Cheap character/token statistics that flag GCG-style adversarial suffixes (tens of microseconds).

A mean-pooled sentence embedding is dominated by the readable request, so a tail of optimised
tokens ("[ [ [ comune their _) itsana ISBNancouver") barely moves it. These statistics look at
the tail directly: lone symbols standing between spaces, words glued across a case change,
runs of symbol tokens. Code, JSON, formulas and logs have many symbols too, but inside tokens
(`["a",`, `\\frac{`), not standing alone among words — the noisy-tails hard negatives train that.
The injection classifier appends these (scaled) to its MiniLM embedding.
"""

from __future__ import annotations

import re

import numpy as np

__all__ = ["suffix_features", "N_SUFFIX_FEATURES"]

_LONE_SYMBOL = re.compile(r"^[^\w\s]{1,3}$")
_GLUED_CASE = re.compile(r"[a-z]{2}[A-Z][a-z]")
_WORD = re.compile(r"^[A-Za-z][a-z]+[.,;:!?]?$")
N_SUFFIX_FEATURES = 5


def _frac(flags: list[bool]) -> float:
    return sum(flags) / len(flags) if flags else 0.0


def _longest_run(flags: list[bool]) -> int:
    best = run = 0
    for flag in flags:
        run = run + 1 if flag else 0
        best = max(best, run)
    return best


def suffix_features(text: str) -> np.ndarray:
    tokens = text.split()
    tail = tokens[-max(8, len(tokens) // 3):]
    lone = [bool(_LONE_SYMBOL.match(t)) for t in tokens]
    tail_lone = [bool(_LONE_SYMBOL.match(t)) for t in tail]
    return np.array([
        _frac(lone),
        _frac(tail_lone),
        min(_longest_run(lone), 8) / 8,
        _frac([bool(_GLUED_CASE.search(t)) for t in tail]),
        1.0 - _frac([bool(_WORD.match(t)) for t in tail]),  # tail tokens that are not plain words
    ], dtype=np.float32)
