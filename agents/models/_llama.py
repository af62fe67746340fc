"""A lean Llama forward pass over the weights transformers dequantised from the GGUF.

Why not `model(...)`/`generate()`: at batch size 1 a 135M model is bound by memory traffic
and per-op overhead. transformers' forward spends much of each token on Python bookkeeping
(cache objects, masks, hooks). This module does the same arithmetic (checked against
transformers' logits in the tests) with fewer, fused matmuls (q|k|v and gate|up) and a
preallocated KV cache.

Precision `int8` stores each matmul weight as per-output-channel int8 and runs fbgemm's
`quantized::linear_dynamic` (activations quantised per call): a quarter of fp32's bytes,
and the only lower precision faster than fp32 on this AVX2 CPU — bf16/fp16 matmuls are
emulated there and ran slower than fp32. Plain dynamic int8 hurt quality (activation
outliers: 80% greedy-token agreement with fp32), so the weights are SmoothQuant-ed first:
per input channel, activation range is moved into the weights (folded into the preceding
RMSNorm weight, or into v/up projection rows, so it costs nothing at run time), calibrated
on a few prompts; that restores ~92% agreement.
"""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

__all__ = ["Precision", "LlamaShape", "KVCache", "LeanLlama", "lean_fp32", "quantize_int8"]

Precision = Literal["int8", "fp32"]
_SMOOTH_ALPHA = 0.7  # migration strength; 0.5 and 0.7 measured, 0.7 kept more greedy tokens
_LINEARS = ("qkv", "o", "gate_up", "down")


@dataclass(frozen=True, slots=True)
class LlamaShape:
    n_layers: int
    hidden: int
    n_heads: int
    n_kv: int
    head_dim: int
    vocab_size: int
    max_positions: int
    eps: float
    rope_theta: float

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "LlamaShape":
        rope = config.get("rope_parameters") or {}
        if rope.get("rope_type", "default") != "default" or config.get("rope_scaling"):
            raise ValueError(f"unsupported rope settings {rope or config.get('rope_scaling')}")
        heads = config["num_attention_heads"]
        return cls(
            n_layers=config["num_hidden_layers"],
            hidden=config["hidden_size"],
            n_heads=heads,
            n_kv=config.get("num_key_value_heads", heads),
            head_dim=config.get("head_dim") or config["hidden_size"] // heads,
            vocab_size=config["vocab_size"],
            max_positions=config["max_position_embeddings"],
            eps=config["rms_norm_eps"],
            rope_theta=rope.get("rope_theta", config.get("rope_theta", 10000.0)),
        )


@dataclass(slots=True)
class KVCache:
    k: torch.Tensor
    """[layers, kv_heads, capacity, head_dim]"""
    v: torch.Tensor
    length: int = 0

    @property
    def capacity(self) -> int:
        return self.k.shape[2]


def lean_fp32(state: dict[str, torch.Tensor], shape: LlamaShape) -> dict[str, torch.Tensor]:
    """transformers' tensor names → this module's fused fp32 layout."""
    out = {"embed": state["model.embed_tokens.weight"].float(), "final_norm": state["model.norm.weight"].float()}
    out["head"] = state.get("lm_head.weight", out["embed"]).float()
    for i in range(shape.n_layers):
        p = f"model.layers.{i}."
        out[f"{i}.norm1"] = state[p + "input_layernorm.weight"].float()
        out[f"{i}.norm2"] = state[p + "post_attention_layernorm.weight"].float()
        out[f"{i}.qkv"] = torch.cat([state[p + f"self_attn.{n}_proj.weight"] for n in "qkv"]).float()
        out[f"{i}.o"] = state[p + "self_attn.o_proj.weight"].float()
        out[f"{i}.gate_up"] = torch.cat([state[p + "mlp.gate_proj.weight"], state[p + "mlp.up_proj.weight"]]).float()
        out[f"{i}.down"] = state[p + "mlp.down_proj.weight"].float()
    return out


def quantize_int8(
    weights: dict[str, torch.Tensor], shape: LlamaShape, calibration: list[list[int]]
) -> dict[str, torch.Tensor]:
    """SmoothQuant + per-channel int8 of the fp32 layout; calibrated by running `calibration` prompts."""
    w = {k: v.clone() for k, v in weights.items()}
    ranges = _activation_ranges(weights, shape, calibration)
    inter = w["0.down"].shape[1]

    def factor(name: str, weight: torch.Tensor) -> torch.Tensor:
        x_max = ranges[name].clamp(min=1e-5)
        w_max = weight.abs().amax(dim=0).clamp(min=1e-5)
        return (x_max**_SMOOTH_ALPHA / w_max ** (1 - _SMOOTH_ALPHA)).clamp(min=1e-3)

    for i in range(shape.n_layers):
        s = factor(f"{i}.qkv", w[f"{i}.qkv"])  # input = norm1 output: fold 1/s into the norm weight
        w[f"{i}.norm1"] /= s
        w[f"{i}.qkv"] *= s
        s = factor(f"{i}.gate_up", w[f"{i}.gate_up"])
        w[f"{i}.norm2"] /= s
        w[f"{i}.gate_up"] *= s
        s = factor(f"{i}.down", w[f"{i}.down"])  # input = silu(gate) * up: linear in up's rows
        w[f"{i}.gate_up"][inter:] /= s[:, None]
        w[f"{i}.down"] *= s
    s = factor("head", w["head"])  # the head is a separate copy, so the tied embedding stays exact
    w["final_norm"] /= s
    w["head"] = w["head"] * s

    out = {k: v for k, v in w.items() if not _is_linear(k)}
    for name in [k for k in w if _is_linear(k)]:
        scale = (w[name].abs().amax(dim=1) / 127.0).clamp(min=1e-8)
        out[name + ".int8"] = torch.round(w[name] / scale[:, None]).clamp(-127, 127).to(torch.int8)
        out[name + ".scale"] = scale
    return out


def _is_linear(name: str) -> bool:
    return name == "head" or name.rsplit(".", 1)[-1] in _LINEARS


def _activation_ranges(weights, shape, calibration) -> dict[str, torch.Tensor]:
    model = LeanLlama(shape, weights)
    ranges: dict[str, torch.Tensor] = {}
    for name, linear in model.linears():
        linear.observe = lambda x, name=name: ranges.__setitem__(
            name, torch.maximum(ranges[name], x.abs().amax(0)) if name in ranges else x.abs().amax(0)
        )
    for ids in calibration:  # the prompts, then a few greedy tokens: decode-time activations too
        cache = model.new_cache(len(ids) + 16)
        logits = model.forward(torch.tensor(ids), cache)
        for _ in range(16):
            logits = model.forward(logits.argmax().view(1), cache)
    return ranges


class _Linear:
    """One weight matrix, applied in fp32 or as prepacked int8."""

    __slots__ = ("weight", "int8", "observe")

    def __init__(self, weights: dict[str, torch.Tensor], name: str) -> None:
        self.observe = None
        self.int8 = name + ".int8" in weights
        if self.int8:
            q, scale = weights[name + ".int8"], weights[name + ".scale"]
            zeros = torch.zeros(q.shape[0], dtype=torch.long)
            with warnings.catch_warnings():  # torch marks quantized tensors deprecated; fbgemm still needs one
                warnings.simplefilter("ignore", UserWarning)
                qt = torch._make_per_channel_quantized_tensor(q, scale.double(), zeros, 0)
            self.weight = torch.ops.quantized.linear_prepack(qt, None)
        else:
            self.weight = weights[name].float().contiguous()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.observe is not None:
            self.observe(x)
        if self.int8:
            # reduce_range=True: fbgemm's AVX2 int8 kernel saturates with full 8-bit activations
            return torch.ops.quantized.linear_dynamic(x, self.weight, True)
        return F.linear(x, self.weight)


class LeanLlama:
    def __init__(self, shape: LlamaShape, weights: dict[str, torch.Tensor]) -> None:
        """`weights` in the layout of `lean_fp32` (fp32) or `quantize_int8` (int8)."""
        self.shape = shape
        self.precision: Precision = "int8" if "head.int8" in weights else "fp32"
        self.embed = weights["embed"].float()
        self.final_norm = weights["final_norm"].float()
        names = ["head"] + [f"{i}.{n}" for i in range(shape.n_layers) for n in _LINEARS]
        # int8 prepacking is ~1 s of C++ that releases the GIL: spread it over the cores
        with ThreadPoolExecutor(max_workers=max(1, torch.get_num_threads())) as pool:
            linears = dict(zip(names, pool.map(lambda name: _Linear(weights, name), names)))
        self.head = linears["head"]
        self.layers = [
            (
                weights[f"{i}.norm1"].float(),
                linears[f"{i}.qkv"],
                linears[f"{i}.o"],
                weights[f"{i}.norm2"].float(),
                linears[f"{i}.gate_up"],
                linears[f"{i}.down"],
            )
            for i in range(shape.n_layers)
        ]
        d = shape.head_dim
        inv_freq = 1.0 / (shape.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
        angles = torch.outer(torch.arange(shape.max_positions, dtype=torch.float32), inv_freq)
        angles = torch.cat([angles, angles], dim=-1)
        self.cos, self.sin = angles.cos(), angles.sin()

    def linears(self) -> list[tuple[str, _Linear]]:
        named = [("head", self.head)]
        for i, layer in enumerate(self.layers):
            named += [(f"{i}.{n}", layer[j]) for n, j in zip(_LINEARS, (1, 2, 4, 5))]
        return named

    def new_cache(self, capacity: int) -> KVCache:
        s = self.shape
        shape = (s.n_layers, s.n_kv, min(capacity, s.max_positions), s.head_dim)
        return KVCache(torch.empty(shape), torch.empty(shape))

    def _rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = self.shape.head_dim // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * cos + rotated * sin

    @torch.inference_mode()
    def forward(self, ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Run `ids` (1-D) after what the cache holds; returns the last position's logits [vocab]."""
        s = self.shape
        T = ids.shape[0]
        pos = cache.length
        if pos + T > cache.capacity:
            raise ValueError(f"KV cache full: {pos}+{T} > {cache.capacity}")
        nq, nk = s.n_heads * s.head_dim, s.n_kv * s.head_dim
        cos = self.cos[pos : pos + T].unsqueeze(1)  # [T, 1, head_dim]: broadcasts over heads
        sin = self.sin[pos : pos + T].unsqueeze(1)
        mask = None
        if T > 1 and pos > 0:  # a later prefill chunk: causal within the chunk, full view of the past
            mask = torch.ones(T, pos + T, dtype=torch.bool).tril(diagonal=pos)
        x = F.embedding(ids, self.embed)
        for i, (norm1, qkv_proj, o_proj, norm2, gate_up, down) in enumerate(self.layers):
            h = F.rms_norm(x, (s.hidden,), norm1, s.eps)
            qkv = qkv_proj(h)
            # rope on q and k together: one set of ops for all heads instead of two
            qk = self._rope(qkv[:, : nq + nk].view(T, s.n_heads + s.n_kv, s.head_dim), cos, sin)
            q = qk[:, : s.n_heads].transpose(0, 1)
            cache.k[i, :, pos : pos + T] = qk[:, s.n_heads :].transpose(0, 1)
            cache.v[i, :, pos : pos + T] = qkv[:, nq + nk :].view(T, s.n_kv, s.head_dim).transpose(0, 1)
            attn = F.scaled_dot_product_attention(
                q.unsqueeze(0),
                cache.k[i, :, : pos + T].unsqueeze(0),
                cache.v[i, :, : pos + T].unsqueeze(0),
                attn_mask=mask,
                is_causal=T > 1 and pos == 0,
                enable_gqa=True,
            )[0]
            x = x + o_proj(attn.transpose(0, 1).reshape(T, nq))
            h = F.rms_norm(x, (s.hidden,), norm2, s.eps)
            gate, up = gate_up(h).chunk(2, dim=-1)
            x = x + down(F.silu(gate) * up)
        cache.length = pos + T
        last = F.rms_norm(x[-1:], (s.hidden,), self.final_norm, s.eps)
        return self.head(last)[0]
