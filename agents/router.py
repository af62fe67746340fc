"""The router agent: a fast, non-generative intent classifier trained from labelled examples.

TF-IDF over word uni/bigrams and character n-grams, then a multinomial logistic regression —
fitted with scikit-learn (the `router` extra). A decision must cost well under a millisecond,
and scikit-learn's per-call input checks alone cost more than that, so a decision uses the
fitted parameters directly: the same analyzers scikit-learn was trained with (passed to it as
callables, so training and deciding cannot disagree), the vocabularies, idf weights and
coefficients. The fitted parameters are cached under the cache dir keyed by the examples' hash:
a cached router decides without importing scikit-learn at all.

    classifier = IntentClassifier.cached({"triage": [...], "research": [...]}, cache_dir)
    classifier.scores("Please check invoice INV-9 from Acme")   # {"triage": 0.93, "research": 0.07}
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flotilla.audit.errors import InvalidInput, MissingExtra

__all__ = ["IntentClassifier", "word_ngrams", "char_ngrams", "FEATURES"]

_TOKEN = re.compile(r"(?u)\b\w\w+\b")
_DIGITS = re.compile(r"\d")


def _normalise(text: str) -> str:
    # Digits become 0: invoice numbers, amounts and dates say "document", whatever their value.
    return _DIGITS.sub("0", text.lower())


def word_ngrams(text: str) -> list[str]:
    """Word unigrams and bigrams of the normalised text."""
    tokens = _TOKEN.findall(_normalise(text))
    return tokens + [f"{a} {b}" for a, b in zip(tokens, tokens[1:])]


def char_ngrams(text: str, sizes: tuple[int, int] = (3, 4)) -> list[str]:
    """Character n-grams inside word boundaries (scikit-learn's `char_wb`), robust to typos."""
    grams: list[str] = []
    low, high = sizes
    for word in _normalise(text).split():
        padded = f" {word} "
        for n in range(low, high + 1):
            if len(padded) <= n:
                grams.append(padded)
                break
            grams.extend(padded[i : i + n] for i in range(len(padded) - n + 1))
    return grams


FEATURES: dict[str, Callable[[str], list[str]]] = {"words": word_ngrams, "chars": char_ngrams}
"""The feature blocks, each TF-IDF weighted and L2-normalised on its own (a FeatureUnion)."""

_FORMAT = 1  # bump when the features or the cache layout change: old cache files are ignored
_C = 10.0  # inverse regularisation: the examples are few and clean, so fit them closely


@dataclass(frozen=True, slots=True)
class _Block:
    analyze: Callable[[str], list[str]]
    vocabulary: dict[str, int]
    idf: np.ndarray
    weights: np.ndarray
    """(n_terms, n_labels): this block's rows of the logistic regression's coefficients."""

    def score(self, text: str) -> np.ndarray | None:
        vocabulary = self.vocabulary
        found = [(j, count) for term, count in Counter(self.analyze(text)).items() if (j := vocabulary.get(term)) is not None]
        if not found:
            return None
        index, counts = np.array(found).T
        vector = (1.0 + np.log(counts)) * self.idf[index]  # sublinear tf × idf, as TfidfVectorizer
        vector /= math.sqrt(float(vector @ vector))
        return vector @ self.weights[index]


class IntentClassifier:
    """Scores a text against every label; probabilities sum to 1."""

    def __init__(self, labels: Sequence[str], blocks: Sequence[_Block], intercept: np.ndarray, *, max_chars: int = 1000) -> None:
        self.labels = tuple(labels)
        self._blocks = tuple(blocks)
        self._intercept = intercept
        self.max_chars = max_chars

    # -- deciding ------------------------------------------------------------------------------

    def scores(self, text: str) -> dict[str, float]:
        """Probability of each label, best first. Only the first `max_chars` characters count:
        the opening of a document says what it is, and the cost stays bounded."""
        if not text or not text.strip():
            raise InvalidInput("the request is empty; give the text to route")
        text = text[: self.max_chars]
        logits = self._intercept.copy()
        for block in self._blocks:
            part = block.score(text)
            if part is not None:
                logits += part
        exp = np.exp(logits - logits.max())
        probs = exp / exp.sum()
        order = np.argsort(-probs)
        return {self.labels[i]: float(probs[i]) for i in order}

    # -- training ------------------------------------------------------------------------------

    @staticmethod
    def fingerprint(examples: Mapping[str, Sequence[str]], max_chars: int = 1000) -> str:
        """What a trained router depends on: its examples, how much of each it reads, the features."""
        canonical = json.dumps({k: list(v) for k, v in sorted(examples.items())}, ensure_ascii=False)
        return hashlib.sha256(f"{_FORMAT}:{_C}:{max_chars}:{canonical}".encode()).hexdigest()[:16]

    @classmethod
    def train(cls, examples: Mapping[str, Sequence[str]], *, max_chars: int = 1000) -> IntentClassifier:
        """Fit on `{label: [example, …]}` (at least two labels, each with examples)."""
        MissingExtra.require("the intent router (training it from examples)", "router", "sklearn")
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from scipy.sparse import hstack
        from threadpoolctl import threadpool_limits

        labels = sorted(examples)
        if len(labels) < 2 or any(not examples[label] for label in labels):
            raise ValueError("a router needs at least two labels, each with examples")
        texts = [text[:max_chars] for label in labels for text in examples[label]]
        targets = [label for label in labels for _ in examples[label]]
        vectorizers = {name: TfidfVectorizer(analyzer=analyze, sublinear_tf=True) for name, analyze in FEATURES.items()}
        matrix = hstack([v.fit_transform(texts) for v in vectorizers.values()]).tocsr()
        # One BLAS/OpenMP thread: the problem is tiny, and threads fighting over 2 busy cores made
        # the fit 30x slower (2 s instead of 70 ms).
        with threadpool_limits(limits=1):
            model = LogisticRegression(C=_C, max_iter=2000).fit(matrix, targets)
        coef = model.coef_
        intercept = model.intercept_
        if len(model.classes_) == 2:  # binary: one row for the second class; softmax([-z/2, z/2]) = sigmoid(z)
            coef = np.vstack([-coef[0] / 2, coef[0] / 2])
            intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
        blocks, offset = [], 0
        for name, vectorizer in vectorizers.items():
            size = len(vectorizer.vocabulary_)
            vocabulary = {term: int(j) for term, j in vectorizer.vocabulary_.items()}
            blocks.append(_Block(FEATURES[name], vocabulary, vectorizer.idf_.copy(), np.ascontiguousarray(coef[:, offset : offset + size].T)))
            offset += size
        return cls([str(c) for c in model.classes_], blocks, np.asarray(intercept, dtype=float), max_chars=max_chars)

    @classmethod
    def cached(cls, examples: Mapping[str, Sequence[str]], cache_dir: Path | None, *, max_chars: int = 1000) -> IntentClassifier:
        """Load the fitted router for these examples from `cache_dir`, or train and keep it there."""
        if cache_dir is None:
            return cls.train(examples, max_chars=max_chars)
        path = Path(cache_dir) / "router" / f"{cls.fingerprint(examples, max_chars)}.npz"
        if path.is_file():
            try:
                return cls.load(path, max_chars=max_chars)
            except (OSError, ValueError, KeyError):  # a damaged cache file is retrained, not fatal
                pass
        classifier = cls.train(examples, max_chars=max_chars)
        try:
            classifier.save(path)
        except OSError:  # a read-only cache dir costs a retrain next time, nothing more
            pass
        return classifier

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {"labels": np.array(self.labels), "intercept": self._intercept}
        for name, block in zip(FEATURES, self._blocks):
            terms = sorted(block.vocabulary, key=block.vocabulary.__getitem__)
            arrays.update({f"{name}.terms": np.array(terms), f"{name}.idf": block.idf, f"{name}.weights": block.weights})
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path)  # atomic: a concurrent reader never sees half a file

    @classmethod
    def load(cls, path: Path, *, max_chars: int = 1000) -> IntentClassifier:
        with np.load(path, allow_pickle=False) as data:
            blocks = [
                _Block(analyze, {str(t): j for j, t in enumerate(data[f"{name}.terms"])}, data[f"{name}.idf"], data[f"{name}.weights"])
                for name, analyze in FEATURES.items()
            ]
            return cls([str(label) for label in data["labels"]], blocks, data["intercept"], max_chars=max_chars)
