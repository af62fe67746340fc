"""A LoRA adapter in the PEFT format (adapter_config.json + adapter_model.safetensors), checked
against the base model and merged into its fp32 weights.

The embedded engine serves an adapter by merging it (W + scale·B·A) into a copy of the base
weights and quantising that to int8 like the base model, so a specialist with an adapter runs
the same fast path as one without. vLLM loads the same folder unchanged with `--lora-modules`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from flotilla.audit.errors import ConfigError

__all__ = ["AdapterMismatch", "AdapterInfo", "read_adapter", "resolve_adapter_path", "merge_adapter", "TARGETS"]

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""The Llama linear layers an adapter may adapt (what the merge and vLLM's LoRA support)."""
_KEY = re.compile(r"^(?:base_model\.model\.)?(model\.layers\.\d+\.(?:self_attn|mlp)\.(\w+))\.lora_([AB])(?:\.default)?\.weight$")


class AdapterMismatch(ConfigError):
    """The adapter was not trained for this base model (name, shape, rank or target modules)."""

    code = "adapter_mismatch"


@dataclass(frozen=True, slots=True)
class AdapterInfo:
    path: Path
    base_model: str
    rank: int
    alpha: float
    scale: float
    targets: tuple[str, ...]
    digest: str
    """SHA-256 (16 hex) of config + weights: the merged int8 cache is keyed on it."""


def resolve_adapter_path(ref: str, base_dir: Path | None = None) -> Path:
    """`adapters/extract` (relative to `base_dir`, then the working dir) or a packaged one,
    `flotilla.agents.document_triage:adapters/extract`."""
    if ":" in ref and not Path(ref).exists():
        package, _, inner = ref.partition(":")
        try:
            path = Path(str(resources.files(package).joinpath(inner)))
        except ModuleNotFoundError:
            raise ConfigError(f"adapter {ref!r}: no package {package!r} (write `package:folder` or a path)") from None
    else:
        path = Path(ref).expanduser()
        if not path.is_absolute() and base_dir is not None and (base_dir / path).exists():
            path = base_dir / path
    if not (path / "adapter_config.json").is_file():
        raise ConfigError(f"adapter {ref!r}: {path} has no adapter_config.json (train one with `flotilla finetune`)")
    return path.resolve()


def read_adapter(path: Path) -> tuple[AdapterInfo, dict[str, Any]]:
    """The adapter's config and tensors; raises AdapterMismatch when they disagree with each other."""
    from safetensors.torch import load_file

    config_file, weights_file = path / "adapter_config.json", path / "adapter_model.safetensors"
    if not weights_file.is_file():
        raise ConfigError(f"adapter {path}: adapter_model.safetensors is missing")
    config = json.loads(config_file.read_text())
    if config.get("peft_type", "LORA") != "LORA":
        raise AdapterMismatch(f"adapter {path}: peft_type {config.get('peft_type')!r}; only LORA adapters can be served")
    rank, alpha = int(config["r"]), float(config.get("lora_alpha", config["r"]))
    targets = config.get("target_modules") or []
    targets = tuple(sorted(targets if isinstance(targets, list) else [targets]))
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        raise AdapterMismatch(f"adapter {path}: target modules {unknown} are not Llama linear layers {list(TARGETS)}")
    tensors = load_file(weights_file)
    for key, tensor in tensors.items():
        found = _KEY.match(key)
        if found is None:
            raise AdapterMismatch(f"adapter {path}: tensor {key} is not a LoRA weight of a Llama linear layer ({list(TARGETS)})")
        along = 0 if found.group(3) == "A" else 1
        if tensor.shape[along] != rank:
            raise AdapterMismatch(f"adapter {path}: {key} has rank {tensor.shape[along]} but adapter_config.json says r={rank}")
    scale = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
    digest = hashlib.sha256(config_file.read_bytes() + weights_file.read_bytes()).hexdigest()[:16]
    info = AdapterInfo(path, str(config.get("base_model_name_or_path") or ""), rank, alpha, scale, targets, digest)
    return info, tensors


def merge_adapter(state: dict[str, Any], path: Path, base_model: str) -> tuple[dict[str, Any], AdapterInfo]:
    """A copy of the HF-named fp32 `state` with the adapter at `path` merged in.

    Raises AdapterMismatch naming both sides when the adapter's base model, shapes or rank do not
    fit `state` (the base model `base_model`)."""
    info, tensors = read_adapter(path)
    wanted = _base_name(base_model)
    if info.base_model and not _base_name(info.base_model).startswith(wanted):
        raise AdapterMismatch(f"adapter {path} was trained for base model {info.base_model!r}, but this engine serves {base_model!r}")
    pairs: dict[str, dict[str, Any]] = {}
    for key, tensor in tensors.items():
        found = _KEY.match(key)
        assert found is not None  # read_adapter checked every key
        pairs.setdefault(found.group(1), {})[found.group(3)] = tensor
    merged = dict(state)
    for module, pair in pairs.items():
        name = module + ".weight"
        if name not in state or set(pair) != {"A", "B"}:
            raise AdapterMismatch(f"adapter {path}: {module} (rank {info.rank}) has no counterpart in base model {base_model!r}")
        a, b = pair["A"].float(), pair["B"].float()
        base = state[name]
        if (b.shape[0], a.shape[1]) != tuple(base.shape):
            raise AdapterMismatch(
                f"adapter {path}: {module} is {b.shape[0]}x{a.shape[1]} (rank {info.rank}) "
                f"but base model {base_model!r} has {base.shape[0]}x{base.shape[1]}"
            )
        merged[name] = base.float() + info.scale * (b @ a)
    return merged, info


def _base_name(name: str) -> str:
    """`HuggingFaceTB/SmolLM2-135M-Instruct`, a local folder of it (the engine's cache folder adds
    the GGUF's quantisation and a hash), or the bare name → the bare name, folded."""
    return re.sub(r"[-.]Q\d.*$|-[0-9a-f]{16}$", "", Path(name.rstrip("/")).name).casefold()
