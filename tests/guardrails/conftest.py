"""Shared, session-scoped engines: each heavy model loads once per test session."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ["NEMO_GUARDRAILS_NO_USAGE_STATS"] = "1"

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def presidio_rail():
    from flotilla.guardrails.pii import PresidioRail

    return PresidioRail()


@pytest.fixture(scope="session")
def embedder():
    from flotilla.guardrails.embeddings import LocalEmbedder

    return LocalEmbedder()


@pytest.fixture(scope="session")
def injection_classifier(embedder):
    from flotilla.guardrails.classifier import InjectionClassifier

    return InjectionClassifier(embedder)


@pytest.fixture(scope="session")
def engine_factory(embedder, presidio_rail):
    from flotilla.guardrails.engines import EngineFactory

    return EngineFactory(embedder=embedder, analyzer=presidio_rail._analyzer)
