"""One on-disk embedding cache for every rails trainer and bench, keyed per text.

Keyed by the embedder's identity (EMBEDDER_ID: a change of encoder or quantisation starts a new
store) and by each text's hash, so adding a line to a corpus embeds that line only, and the
injection and content-safety trainers share the vectors of the texts they have in common.
The int8 encoder embeds one text per forward pass either way, so a cached vector is exactly the
vector a check computes.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from flotilla.guardrails.embeddings import EMBEDDER_ID, LocalEmbedder

__all__ = ["embed_cached", "CACHE_DIR"]

CACHE_DIR = Path(__file__).resolve().parents[2] / ".cache" / "embeddings"


def _key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def _store_path(cache_dir: Path) -> Path:
    return cache_dir / f"texts-{hashlib.sha256(EMBEDDER_ID.encode()).hexdigest()[:12]}.npz"


def _load(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        return {}
    with np.load(path) as data:
        return dict(zip(data["keys"].tolist(), data["vectors"]))


def embed_cached(embedder: LocalEmbedder, texts: list[str], *, cache_dir: Path = CACHE_DIR, chunk: int = 500) -> np.ndarray:
    """L2-normalised embeddings, one row per text; only texts never embedded before reach the encoder."""
    path = _store_path(cache_dir)
    store = _load(path)
    missing = list(dict.fromkeys(t for t in texts if _key(t) not in store))
    for start in range(0, len(missing), chunk):  # saved chunk by chunk: an interrupted run keeps its work
        fresh = missing[start : start + chunk]
        store = {**_load(path), **store, **dict(zip(map(_key, fresh), embedder.encode(fresh)))}  # merge a parallel run's rows
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, keys=np.array(list(store)), vectors=np.vstack(list(store.values())).astype(np.float32))
        tmp.replace(path)  # atomic: an interrupted save never leaves a truncated store
    if not texts:
        return np.zeros((0, 384), np.float32)
    return np.vstack([store[_key(t)] for t in texts]).astype(np.float32)
