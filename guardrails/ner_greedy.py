"""spaCy's NER greedy decoding, batched in numpy: the entities `ner.pipe` finds, for a fraction of the CPU.

spaCy's parser walks its transition system in compiled code, but this build (Cython profiling
hooks on Python < 3.12) takes the GIL's thread state at every inline call of that loop: checking
74 moves' validity at every token costs ~65 µs a token here, twice the model's own arithmetic.
For NER every move consumes one token, so all documents of a batch are at the same token at the
same step: the same model (tok2vec, the precomputed lower layer, maxout, the output layer) and the
same validity rules (`spacy/pipeline/_parser_internals/ner.pyx`, for documents with no preset
entities) run here as array operations over the batch, one step per token.

Same decisions: features are summed in spaCy's order, maxout and argmax pick the first maximum
as it does; only the output layer's matrix product may round differently (BLAS kernels), which
could swap two moves whose scores tie to the last bit (`tests/guardrails/test_ner_greedy.py`
compares both on every labelled text). Documents with preset entities, or a model that is not a
BILUO NER with an output layer, go through `ner.pipe` unchanged.
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
        self.unseen = sorted(model.attrs.get("unseen_classes", ()))
        self.supported = (
            type(ner.moves).__name__ == "BiluoPushDown" and ner.cfg.get("beam_width", 1) == 1
            and model.attrs.get("has_upper", False) and self.lower.get_dim("nF") == 3
        )

    def pipe(self, docs: Iterable[Doc]) -> Iterator[Doc]:
        for batch in minibatch(docs, size=self.batch_size):
            if not self.supported or any(doc.has_annotation("ENT_IOB") for doc in batch):
                yield from self.ner.pipe(batch, batch_size=self.batch_size)
                continue
            # As spaCy's Parser.pipe: quarter batches of docs of similar length (less memory at
            # once, and a step loop as long as the longest doc of a quarter, not of the batch).
            for part in minibatch(sorted(batch, key=len), size=max(self.batch_size // 4, 2)):
                self._decode(part)
            yield from batch

    def _decode(self, docs: Sequence[Doc]) -> None:
        lengths = np.array([len(doc) for doc in docs])
        if not lengths.sum():
            for doc in docs:
                doc.set_ents([], default="outside")
            return
        features = self.lower.predict(self.tok2vec.predict(list(docs)))  # (1 + tokens, 3, hidden, pieces)
        pad, cached = features[0], features[1:]
        bias = self.lower.get_param("b")
        weights_t = np.ascontiguousarray(self.upper.get_param("W").T)
        out_bias = self.upper.get_param("b")
        offsets = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        space = np.concatenate([doc.to_array("IS_SPACE") for doc in docs]).astype(bool)
        sent_start = np.concatenate([doc.to_array("SENT_START") for doc in docs]) == 1

        order = np.argsort(-lengths, kind="stable")  # longest first: the docs still going are a prefix
        lengths, offsets = lengths[order], offsets[order]
        n = len(docs)
        is_open = np.zeros(n, dtype=bool)
        start = np.zeros(n, dtype=np.int64)
        ent_label = np.zeros(n, dtype=np.uint64)
        found: list[list[tuple[int, int, int]]] = [[] for _ in range(n)]
        for t in range(int(lengths[0])):
            k = int(np.count_nonzero(lengths > t))
            row = offsets[:k] + t
            opened = is_open[:k]
            summed = cached[row, 0].copy()  # spaCy's order: 0 + f0 + f1 + f2, then the bias
            if opened.any():
                mask = opened[:, None, None]
                summed += np.where(mask, cached[offsets[:k] + start[:k], 1], pad[1])
                summed += np.where(mask, cached[np.maximum(row - 1, 0), 2], pad[2])
            else:
                summed += pad[1]
                summed += pad[2]
            summed += bias
            scores = summed.max(axis=-1) @ weights_t
            scores += out_bias
            if self.unseen:
                scores[:, self.unseen] = scores.min()
            last = lengths[:k] - 1 == t
            next_sent = np.zeros(k, dtype=bool)
            inside = ~last
            next_sent[inside] = sent_start[row[inside] + 1]
            here_space = space[row]
            can_begin = ~last & ~next_sent & ~here_space
            can_go_on = ~last & ~next_sent
            closed_ok = self.is_o | (self.is_b & can_begin[:, None]) | (self.is_u & ~here_space[:, None])
            same = self.label[None, :] == ent_label[:k, None]
            open_ok = same & (self.is_l | (self.is_i & can_go_on[:, None]))
            valid = np.where(opened[:, None], open_ok, closed_ok)
            choice = np.where(valid, scores, -np.inf).argmax(axis=1)
            kind, label = self.kind[choice], self.label[choice]
            begins = kind == 1
            is_open[:k][begins] = True
            start[:k][begins] = t
            ent_label[:k][begins] = label[begins]
            for i in np.flatnonzero((kind == 3) | (kind == 4)):
                first = t if kind[i] == 4 else int(start[i])
                found[i].append((first, t + 1, int(label[i])))
            is_open[:k][kind == 3] = False
        for i, spans in zip(order, found):
            doc = docs[i]
            doc.set_ents([Span(doc, first, end, label=label) for first, end, label in spans], default="outside")
