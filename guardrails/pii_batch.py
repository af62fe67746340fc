"""Batched PII redaction of recorded content (span attributes, run records), for the audit trail.

`PresidioRail.redact` analyses one string at a time, and a chat message list (JSON) is many
strings. Here a whole export batch is redacted together, giving what `redact` gives text by text:

- JSON stays JSON: its string leaves are pulled out of every text of the batch (and, unlike the
  rail, integers long enough to be a card or phone number, which the record need not keep as numbers);
- leaves that cannot hold any configured entity are not analysed (a fixed set of structural
  words such as message roles, and short values with no letter and too few digits for a phone,
  card, SSN, IBAN or IP address). Anything with a letter may be a name and goes through NER;
- each distinct leaf is analysed once, and remembered (an LRU), so the system prompt repeated
  in every step, or the same text reaching two exporters, costs one analysis; a long leaf is
  analysed paragraph by paragraph (a heading line such as "INPUT:" a piece of its own, a JSON
  paragraph leaf by leaf), so the run's input and the earlier answers each prompt repeats are too;
- the rest is analysed as one batch (`StagedAnalyzer`: Presidio's findings with spaCy run in
  batches, and the pipes that only feed lemmas only where something was found), without the dependency parser, which
  Presidio does not read.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from flotilla.guardrails.pii import CHUNK_CHARS, PresidioRail, placeholder
from flotilla.guardrails.pii_names import is_person_field
from flotilla.guardrails.pii_staged import StagedAnalyzer

__all__ = ["BatchRedactor", "could_hold_pii", "STRUCTURAL_WORDS"]

STRUCTURAL_WORDS = frozenset(
    {"system", "user", "assistant", "tool", "developer", "function", "text", "stop", "length", "tool_calls",
     "content_filter", "json_object", "json_schema", "image_url", "input_text", "output_text"}
)
"""Chat-format enum values (roles, part types, finish reasons): never PII, so never analysed."""
MIN_DIGITS = 4
"""The fewest digits any configured numeric entity has (an IPv4 address: 1.2.3.4)."""
PARAGRAPH_SPLIT_CHARS = 600
"""Leaves longer than this are analysed per paragraph (blank-line separated)."""
CACHE_ENTRIES = 20_000
CACHE_MAX_CHARS = 4_000
"""Longer leaves are analysed every time rather than held in memory."""
CACHE_CHARS = 4_000_000
"""All cached leaves together (raw + redacted characters): 20,000 long paragraphs would otherwise
hold up to 160M characters. Hits come from the texts of runs in flight and the prompts every step
repeats (least recently used go first), which 100 runs in flight keep within ~1M characters."""


def numeric_leaf(value: Any) -> str | None:
    """A JSON integer with digits enough for a card, phone, SSN or account number, as text: the
    audit copy redacts it as it would the string (`PresidioRail.redact` keeps a JSON number as is,
    since what it returns flows on into the workflow, where the type matters); else None."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10 ** (MIN_DIGITS - 1):
        return str(value)
    return None


def could_hold_pii(leaf: str) -> bool:
    """False only for text no configured entity can match; when in doubt, True (NER runs)."""
    stripped = leaf.strip()
    if len(stripped) < 2 or stripped in STRUCTURAL_WORDS:
        return False
    if any(ch.isalpha() for ch in stripped):
        return True  # a name, an e-mail address, an IBAN: only NER and the recognizers can tell
    return sum(ch.isdigit() for ch in stripped) >= MIN_DIGITS


class BatchRedactor:
    """`redact_many(texts)` → the texts as `PresidioRail.redact` would return them, as one batch."""

    def __init__(self, rail: PresidioRail) -> None:
        self.rail = rail
        # Presidio reads entities, tokens and lemmas; the dependency parser only costs (~30% of spaCy's time).
        nlp = getattr(rail._analyzer.nlp_engine, "nlp", {}).get("en")
        if nlp is not None and "parser" in nlp.pipe_names:
            nlp.disable_pipe("parser")
        self._staged: StagedAnalyzer = rail._staged  # the rail's own analysis, given whole batches here
        self._person = placeholder("PERSON") if "PERSON" in rail.entities else None
        self._cache: OrderedDict[str, str] = OrderedDict()
        self._cache_chars = 0
        self._lock = threading.Lock()

    def redact(self, text: str) -> str:
        return self.redact_many([text])[0]

    def redact_many(self, texts: Sequence[str]) -> list[str]:
        parsed = [_json_container(text) for text in texts]
        leaves: dict[str, None] = {}  # distinct, in order
        for text, data in zip(texts, parsed):
            if data is None:
                leaves[text] = None
            else:
                _collect(data, leaves)
        # A long leaf is redacted paragraph by paragraph (as the rail cuts texts over its limit):
        # a prompt repeats the run's input plus earlier answers, so its paragraphs are cache hits.
        # A paragraph that is JSON (an earlier step's answer) is redacted leaf by leaf, as the
        # answer's own span attribute is: one analysis serves both, and both read alike.
        pieces = {leaf: _paragraphs(leaf) for leaf in leaves if len(leaf) > PARAGRAPH_SPLIT_CHARS}
        structured = {p: data for parts in pieces.values() for p in parts if (data := _json_container(p)) is not None}
        wanted = dict.fromkeys(p for leaf in leaves for p in pieces.get(leaf, (leaf,)) if p not in structured)
        for data in structured.values():
            _collect(data, wanted)
        done = self._leaves(list(wanted))
        for piece, data in structured.items():
            changed = [False]
            new = _replace(data, done, changed, self._person)
            if changed[0]:
                done[piece] = json.dumps(new, ensure_ascii=False)
        redacted = {leaf: done[leaf] for leaf in leaves if leaf in done and leaf not in pieces}
        for leaf, parts in pieces.items():
            if any(part in done for part in parts):
                redacted[leaf] = "".join(done.get(part, part) for part in parts)
        out = []
        for text, data in zip(texts, parsed):
            if data is None:
                out.append(redacted.get(text, text))
                continue
            changed = [False]
            new = _replace(data, redacted, changed, self._person)
            out.append(json.dumps(new, ensure_ascii=False) if changed[0] else text)
        return out

    def _leaves(self, leaves: list[str]) -> dict[str, str]:
        """Redacted text of each leaf that changes (leaves absent from the result stay as they are)."""
        done: dict[str, str] = {}
        todo: list[str] = []
        with self._lock:
            for leaf in leaves:
                if not could_hold_pii(leaf):
                    continue
                cached = self._cache.get(leaf)
                if cached is None:
                    todo.append(leaf)
                else:
                    self._cache.move_to_end(leaf)
                    if cached != leaf:
                        done[leaf] = cached
        if not todo:
            return done
        long = [leaf for leaf in todo if len(leaf) > CHUNK_CHARS]  # spaCy's max_length: the rail cuts these up
        short = [leaf for leaf in todo if len(leaf) <= CHUNK_CHARS]
        results = dict(zip(short, self._analyze(short))) if short else {}
        fresh: dict[str, str] = {leaf: redacted for leaf, (redacted, _, _) in zip(long, self.rail._redact_many(long))}
        for leaf, found in results.items():
            fresh[leaf] = self.rail._anonymized(leaf, found)[0]
        with self._lock:
            for leaf, value in fresh.items():
                if len(leaf) <= CACHE_MAX_CHARS:
                    old = self._cache.pop(leaf, None)
                    if old is not None:
                        self._cache_chars -= len(leaf) + len(old)
                    self._cache[leaf] = value
                    self._cache_chars += len(leaf) + len(value)
            while len(self._cache) > CACHE_ENTRIES or self._cache_chars > CACHE_CHARS:
                leaf, value = self._cache.popitem(last=False)
                self._cache_chars -= len(leaf) + len(value)
        done.update({leaf: value for leaf, value in fresh.items() if value != leaf})
        return done

    def _analyze(self, texts: list[str]) -> list[list[Any]]:
        return self._staged.analyze(texts)


def _paragraphs(text: str) -> list[str]:
    """`text` cut at blank lines, the separators (and each paragraph's leading and trailing white
    space) pieces of their own, and a paragraph's heading line ("INPUT:", "EXTRACT RESULT:", as
    agents label a prompt's parts) cut from what follows it, so the run's input reads as it does
    alone; the pieces join back to `text` exactly. Linear in the text (str.strip, a split anchored
    at newlines): prompts are user input."""
    pieces: list[str] = []
    for paragraph in _BLANK_LINES.split(text):
        core = paragraph.strip()
        if not core:
            pieces.append(paragraph)
            continue
        start = len(paragraph) - len(paragraph.lstrip())
        end = start + len(core)
        pieces += [paragraph[:start], *_HEADING.split(core, maxsplit=1), paragraph[end:]]
    return [piece for piece in pieces if piece]


_BLANK_LINES = re.compile(r"(\n[ \t]*\n\s*)")
_HEADING = re.compile(r"\A([A-Z][A-Z0-9 _/-]{0,40}:[ \t]*\n)")


def _json_container(text: str) -> Any:
    """The parsed value when `text` is a JSON object or array (what `redact` walks), else None."""
    head = text.lstrip()[:1]
    if head not in ("{", "["):
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, (dict, list)) else None


def _collect(value: Any, into: dict[str, None]) -> None:
    if isinstance(value, str):
        into[value] = None
    elif (number := numeric_leaf(value)) is not None:
        into[number] = None
    elif isinstance(value, dict):
        for item in value.values():
            _collect(item, into)
    elif isinstance(value, list):
        for item in value:
            _collect(item, into)


def _replace(value: Any, redacted: dict[str, str], changed: list[bool], person: str | None, key: str | None = None,
             parent: str | None = None) -> Any:
    """`value` with each string leaf (and long integer) redacted; a name in a field that holds a
    person (`is_person_field`) becomes `person` (None: PERSON is not redacted), as `PresidioRail.redact` does."""
    if isinstance(value, str):
        new = person if person is not None and is_person_field(value, key, parent) else redacted.get(value)
    elif (number := numeric_leaf(value)) is not None:
        new = redacted.get(number)
    else:
        new = None
    if new is not None:
        changed[0] = True
        return new
    if isinstance(value, dict):
        return {k: _replace(item, redacted, changed, person, k, key) for k, item in value.items()}
    if isinstance(value, list):
        return [_replace(item, redacted, changed, person, key, parent) for item in value]
    return value
