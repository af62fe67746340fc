"""Serving a LoRA adapter on the embedded engine: merged into the fp32 weights exactly as PEFT
applies it, cached as int8 per (base, adapter), and refused with both sides named when it does
not fit the base model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from flotilla.agents.finetune.adapter import AdapterMismatch, merge_adapter, read_adapter, resolve_adapter_path
from flotilla.agents.models.registry import ModelEndpoint, ModelRegistry
from flotilla.agents.models.testing import FunctionModel
from flotilla.audit.errors import ConfigError

HIDDEN = 576  # SmolLM2-135M
BASE = "HuggingFaceTB/SmolLM2-135M-Instruct"


def _adapter(tmp: Path, *, rank: int = 4, config_rank: int | None = None, base: str = BASE, width: int = HIDDEN, targets=("q_proj",)) -> Path:
    """A hand-written PEFT adapter folder: config + one layer's LoRA pair per target."""
    tmp.mkdir(parents=True, exist_ok=True)
    config = {"peft_type": "LORA", "r": config_rank or rank, "lora_alpha": 2 * rank, "target_modules": list(targets), "base_model_name_or_path": base}
    (tmp / "adapter_config.json").write_text(json.dumps(config))
    tensors = {}
    for target in targets:
        key = f"base_model.model.model.layers.0.self_attn.{target}"
        tensors[f"{key}.lora_A.weight"] = torch.randn(rank, width)
        tensors[f"{key}.lora_B.weight"] = torch.randn(HIDDEN, rank)
    save_file(tensors, str(tmp / "adapter_model.safetensors"))
    return tmp


def _state() -> dict[str, torch.Tensor]:
    return {"model.layers.0.self_attn.q_proj.weight": torch.zeros(HIDDEN, HIDDEN), "model.norm.weight": torch.ones(HIDDEN)}


def test_merge_adds_scaled_b_times_a(tmp_path: Path) -> None:
    path = _adapter(tmp_path / "a", rank=4)
    merged, info = merge_adapter(_state(), path, "SmolLM2-135M-Instruct.Q4_1-0123456789abcdef")
    _, tensors = read_adapter(path)
    a = tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"]
    b = tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"]
    assert info.rank == 4 and info.scale == 2.0
    assert torch.allclose(merged["model.layers.0.self_attn.q_proj.weight"], 2.0 * b @ a)
    assert torch.equal(merged["model.norm.weight"], torch.ones(HIDDEN))  # untouched tensors stay


def test_adapter_for_another_base_model_names_both(tmp_path: Path) -> None:
    path = _adapter(tmp_path / "a", base="Qwen/Qwen2.5-0.5B-Instruct")
    with pytest.raises(AdapterMismatch) as caught:
        merge_adapter(_state(), path, "SmolLM2-135M-Instruct")
    assert "Qwen/Qwen2.5-0.5B-Instruct" in caught.value.message and "SmolLM2-135M-Instruct" in caught.value.message


def test_adapter_of_another_width_names_both_shapes(tmp_path: Path) -> None:
    path = _adapter(tmp_path / "a", width=960, base="")  # a bigger model's adapter, its base unnamed
    with pytest.raises(AdapterMismatch, match=r"576x960 \(rank 4\).*576x576"):
        merge_adapter(_state(), path, "SmolLM2-135M-Instruct")


def test_rank_in_config_and_weights_must_agree(tmp_path: Path) -> None:
    path = _adapter(tmp_path / "a", rank=8, config_rank=4)
    with pytest.raises(AdapterMismatch, match="rank 8 but adapter_config.json says r=4"):
        read_adapter(path)


def test_target_modules_must_be_llama_linears(tmp_path: Path) -> None:
    path = _adapter(tmp_path / "a")
    config = json.loads((path / "adapter_config.json").read_text())
    (path / "adapter_config.json").write_text(json.dumps({**config, "target_modules": ["embed_tokens", "q_proj"]}))
    with pytest.raises(AdapterMismatch, match=r"\['embed_tokens'\]"):
        read_adapter(path)


def test_adapter_paths_resolve_or_say_what_is_missing(tmp_path: Path) -> None:
    path = _adapter(tmp_path / "adapters" / "extract")
    assert resolve_adapter_path("adapters/extract", tmp_path) == path.resolve()
    with pytest.raises(ConfigError, match="has no adapter_config.json"):
        resolve_adapter_path("adapters/missing", tmp_path)
    with pytest.raises(ConfigError, match="no package 'no_such_package'"):
        resolve_adapter_path("no_such_package:adapters/extract")


def test_registry_gives_an_adapter_alias_its_own_embedded_client() -> None:
    made: list[tuple[str | None, str]] = []

    def embedded(adapter: str | None = None, precision: str = "int8") -> FunctionModel:
        made.append((adapter, precision))
        return FunctionModel(lambda request: "{}", name=f"embedded+{adapter}")

    registry = ModelRegistry(
        {
            "specialist-extract": ModelEndpoint(adapter="adapters/extract"),
            "specialist-exact": ModelEndpoint(adapter="adapters/extract", precision="fp32"),
            "specialist-decide": ModelEndpoint(),
        },
        embedded=embedded, http_client=lambda e, k: pytest.fail("no HTTP endpoint here"),
    )
    assert registry.resolve("specialist-extract").client.name == "embedded+adapters/extract"
    registry.resolve("specialist-exact")
    registry.resolve("specialist-decide")
    assert made == [("adapters/extract", "int8"), ("adapters/extract", "fp32"), (None, "int8")]
    with pytest.raises(ValueError, match="only provider embedded merges an adapter"):
        ModelEndpoint(provider="openai-compatible", base_url="http://127.0.0.1:8000/v1", model="extract", adapter="adapters/extract")
    with pytest.raises(ValueError, match="only provider embedded has a precision"):
        ModelEndpoint(provider="openai-compatible", base_url="http://127.0.0.1:8000/v1", model="extract", precision="fp32")


class _AdaptedModel(FunctionModel):
    """An in-process model that reports the adapter it answered with, as EmbeddedClient does."""

    async def complete(self, request):
        from dataclasses import replace

        return replace(await super().complete(request), extra={"adapter": "extract"})


async def test_chat_spans_name_the_adapter(tmp_path: Path) -> None:
    from flotilla.audit.semconv import MODEL_ADAPTER
    from tests.graphs.tiers import GOOD, TierHarness, write_workflow

    harness = TierHarness(tmp_path, {"small": _AdaptedModel(lambda request: json.dumps(GOOD), name="small")})
    try:
        assert (await harness.run(write_workflow(tmp_path, model="small"))).status == "succeeded"
        chats = [s for s in harness.spans() if s["attributes"].get("gen_ai.operation.name") == "chat"]
    finally:
        await harness.aclose()
    assert chats and all(s["attributes"][MODEL_ADAPTER] == "extract" for s in chats)
