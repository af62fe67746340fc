"""spaCy's NER greedy decoding in numpy: the entities `ner.pipe` finds, for a fraction of the CPU.

spaCy's parser walks its transition system in compiled code, but this build (Cython profiling
hooks on Python < 3.12) takes the GIL's thread state at every inline call of that loop: checking
74 moves' validity at every token costs ~65 µs a token here, twice the model's own arithmetic.

In NER every move consumes one token, and the state the model reads is small: outside an entity
its features are the token alone (and padding), inside one the token, the entity's first token
and the token before. So the decoding runs as array operations, not one step per token:
- every token's move *outside* an entity is chosen at once (one matrix product for the batch);
- from each token whose outside move opens an entity (BEGIN), that entity is followed token by
  token until it closes (LAST), all such entities together, a step per token of the longest;
- a walk over those moves in text order keeps the ones the sequential parse makes (a BEGIN
  inside an entity that is already open is never reached).
Same model (tok2vec, the precomputed lower layer, maxout, the output layer), same validity rules
(`spacy/pipeline/_parser_internals/ner.pyx`, for documents with no preset entities), features
summed in spaCy's order, maxout and argmax picking the first maximum as it does; only the output
layer's matrix product may round differently (BLAS kernels), which could swap two moves whose
scores tie to the last bit (`tests/guardrails/test_ner_greedy.py` compares both on every labelled
text). Documents with preset entities, or a model that is not a BILUO NER with an output layer
and every class seen in training, go through `ner.pipe` unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from spacy.tokens import Doc, Span
from spacy.util import minibatch

__all__ = ["GreedyNER"]

KINDS = "MBILUO"  # spaCy's move numbering in ner.pyx: MISSING, BEGIN, IN, LAST, UNIT, OUT


class GreedyNER:
    """`pipe(docs)` → the docs with the entities `ner.pipe(docs)` sets (greedy, beam width 1)."""

    def __init__(self, ner: Any, *, batch_size: int = 256) -> None:
        self.ner = ner
        self.batch_size = batch_size
        model = ner.model
        self.tok2vec, self.lower, self.upper = (model.get_ref(name) for name in ("tok2vec", "lower", "upper"))
        names = [ner.moves.get_class_name(i) for i in range(ner.moves.n_moves)]
        kind = np.array([KINDS.index(name[0]) for name in names])
        label = np.array([ner.vocab.strings[name[2:]] if len(name) > 2 else 0 for name in names], dtype=np.uint64)
        labelled = label != 0  # a move with no label only applies to preset entities
        self.kind, self.label = kind, label
        self.is_b, self.is_i = (kind == 1) & labelled, (kind == 2) & labelled
        self.is_l, self.is_u, self.is_o = (kind == 3) & labelled, (kind == 4) & labelled, kind == 5
        self.supported = (
            type(ner.moves).__name__ == "BiluoPushDown" and ner.cfg.get("beam_width", 1) == 1
            and model.attrs.get("has_upper", False) and self.lower.get_dim("nF") == 3
            and not model.attrs.get("unseen_classes")  # spaCy scores those with the batch's minimum, step by step
        )

    def pipe(self, docs: Iterable[Doc]) -> Iterator[Doc]:
        for batch in minibatch(docs, size=self.batch_size):
            if not self.supported or any(doc.has_annotation("ENT_IOB") for doc in batch):
                yield from self.ner.pipe(batch, batch_size=self.batch_size)
                continue
            for part in minibatch(batch, size=max(self.batch_size // 4, 2)):  # as spaCy's Parser.pipe: less memory at once
                self._decode(part)
            yield from batch

    def _decode(self, docs: Sequence[Doc]) -> None:
        lengths = np.array([len(doc) for doc in docs], dtype=np.int64)
        total = int(lengths.sum())
        if not total:
            for doc in docs:
                doc.set_ents([], default="outside")
            return
        features = self.lower.predict(self.tok2vec.predict(list(docs)))  # (1 + tokens, 3, hidden, pieces); row 0: padding
        ends = np.cumsum(lengths)  # one past each doc's last token, counted over the batch
        last = np.zeros(total, dtype=bool)
        last[ends[lengths > 0] - 1] = True
        space = np.concatenate([doc.to_array("IS_SPACE") for doc in docs]).astype(bool)
        sent_start = np.concatenate([doc.to_array("SENT_START") for doc in docs]) == 1
        next_sent = np.zeros(total, dtype=bool)
        next_sent[:-1] = sent_start[1:]
        can_go_on = ~last & ~next_sent  # an entity may take in the next token
        # Outside an entity: the token, then padding for the entity's start and the token before.
        outside = features[1:, 0] + features[0, 1]
        outside += features[0, 2]
        valid = self.is_o | (self.is_b & (can_go_on & ~space)[:, None]) | (self.is_u & ~space[:, None])
        moves = self._best(outside, valid)
        kind, label = self.kind[moves], self.label[moves]
        begins = np.flatnonzero(kind == 1)
        closes = dict(zip(begins.tolist(), self._follow(features, begins, label[begins], can_go_on).tolist()))
        # In text order, as the parse meets them: a BEGIN or UNIT inside an entity already open is never reached.
        found: list[list[Span]] = [[] for _ in docs]
        starts = (ends - lengths).tolist()
        opening = np.flatnonzero((kind == 1) | (kind == 4))
        resume = 0
        for token, d in zip(opening.tolist(), np.searchsorted(ends, opening, side="right").tolist()):
            if token < resume:
                continue
            close = closes.get(token, token)  # a UNIT closes where it opens
            found[d].append(Span(docs[d], token - starts[d], close + 1 - starts[d], label=int(label[token])))
            resume = close + 1
        for doc, spans in zip(docs, found):
            doc.set_ents(spans, default="outside")

    def _follow(self, features: np.ndarray, begins: np.ndarray, labels: np.ndarray, can_go_on: np.ndarray) -> np.ndarray:
        """The last token of the entity each of `begins` opens: all of them a token at a time,
        with the features inside an entity (the token, the entity's first token, the token before)."""
        closes = np.empty(len(begins), dtype=np.int64)
        active = np.arange(len(begins))
        step = 1
        while active.size:
            first = begins[active]
            at = first + step
            inside = features[at + 1, 0] + features[first + 1, 1]  # spaCy's order: token, start, previous, bias
            inside += features[at, 2]
            same = self.label[None, :] == labels[active][:, None]
            valid = same & (self.is_l | (self.is_i & can_go_on[at][:, None]))
            closed = self.kind[self._best(inside, valid)] == 3
            closes[active[closed]] = at[closed]
            active = active[~closed]
            step += 1
        return closes

    def _best(self, summed: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """The highest-scoring valid move per row of summed features (bias added here, then maxout and the output layer)."""
        summed += self.lower.get_param("b")
        scores = summed.max(axis=-1) @ self.upper.get_param("W").T
        scores += self.upper.get_param("b")
        return np.where(valid, scores, -np.inf).argmax(axis=1)
