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


@pytest.fixture(scope="session")
def vllm(tmp_path_factory):
    """Real vLLM (CPU) serving the embedded model's weights, LoRA on, started once per test session
    (tests/support/vllm.py). Skipped when its venv is absent, except under CI, where that fails."""
    from flotilla.runtime.settings import load_settings
    from tests.support.vllm import VLLM_VENV, running_vllm, vllm_python

    if vllm_python() is None:
        message = f"vLLM is not installed ({VLLM_VENV} missing): run `make vllm-venv`"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    with running_vllm(load_settings().cache_dir, tmp_path_factory.mktemp("vllm")) as server:
        yield server
