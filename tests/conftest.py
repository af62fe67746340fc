"""Fixtures shared across test folders."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def embedded_engine():
    """The real embedded model, loaded once per test session from the user cache dir (warm after the first run)."""
    from flotilla.agents.models.embedded import get_engine
    from flotilla.runtime.settings import load_settings

    return get_engine(load_settings().cache_dir)
