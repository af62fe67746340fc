"""The embedded engine with a LoRA adapter gives PEFT's own logits (fp32), and serves it on the
int8 fast path from a cache keyed by (base, adapter)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from flotilla.agents.finetune.adapter import read_adapter
from flotilla.agents.models._weights import hf_checkpoint
from flotilla.runtime.settings import load_settings
from tests.support.vllm import random_adapter

pytestmark = pytest.mark.model
PROMPT = [{"role": "user", "content": "Invoice INV-1 from Acme Ltd, total 12.50 GBP. Extract the invoice number."}]


@pytest.fixture(scope="module")
def adapter(tmp_path_factory) -> Path:
    # Seeded, so the same bytes (and the same int8 cache entry) every run.
    return random_adapter(hf_checkpoint(load_settings().cache_dir), tmp_path_factory.mktemp("adapter") / "random", seed=7)


def test_merged_weights_give_pefts_logits(adapter: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from flotilla.agents.models.embedded import EmbeddedEngine

    cache = load_settings().cache_dir
    engine = EmbeddedEngine(cache, precision="fp32", adapter=adapter)
    ids = engine.prompt_ids(PROMPT)
    ours = engine._model.forward(torch.tensor(ids), engine._model.new_cache(len(ids)))
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(hf_checkpoint(cache), dtype=torch.float32), adapter).eval()
    with torch.no_grad():
        theirs = peft_model(torch.tensor([ids])).logits[0, -1]
        with peft_model.disable_adapter():
            base = peft_model(torch.tensor([ids])).logits[0, -1]
    assert torch.allclose(ours, theirs, atol=2e-3), (ours - theirs).abs().max()
    assert (theirs - base).abs().max() > 0.1  # the adapter changes the answer: the merge is not a no-op
    engine.close()


def test_int8_engine_per_adapter_is_cached_and_named(adapter: Path, embedded_engine) -> None:
    from flotilla.agents.models.embedded import EmbeddedClient, get_engine

    cache = load_settings().cache_dir
    engine = get_engine(cache, adapter=adapter)
    assert engine is not embedded_engine and engine is get_engine(cache, adapter=adapter)  # one engine per (base, adapter)
    assert engine.precision == "int8" and engine.adapter == "random"
    assert (hf_checkpoint(cache) / "adapters" / read_adapter(adapter)[0].digest / "lean-int8.safetensors").is_file()
    assert EmbeddedClient(engine).name == "embedded:SmolLM2-135M-Instruct+random"
    assert engine.generate(PROMPT, max_tokens=8).output_tokens > 0
