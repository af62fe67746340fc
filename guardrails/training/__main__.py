"""Retrain every rails classifier, reproducibly, with one command (after `make corpus`):

    python -m flotilla.guardrails.training

The classifiers share one embedder (embeddings.LocalEmbedder), so a change to how embeddings are
computed must retrain all of them together: the injection classifier, then content safety when
its trainer (train_safety) is present.
"""

from __future__ import annotations

import importlib.util
import os

from flotilla.guardrails.training import train_injection


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print("== injection classifier")
    train_injection.main([])
    if importlib.util.find_spec("flotilla.guardrails.training.train_safety") is not None:
        from flotilla.guardrails.training import train_safety

        print("== content-safety classifier")
        train_safety.main()
    else:
        print("(no train_safety module: content-safety classifier not retrained)")


if __name__ == "__main__":
    main()
