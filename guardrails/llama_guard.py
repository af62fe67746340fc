"""Llama Guard 3 via transformers: build its prompt, generate, parse `safe` / `unsafe` + categories.

Weights come from a configured local directory (or a model id already in the local HF cache;
nothing is downloaded: `local_files_only=True`). Operators fetch meta-llama/Llama-Guard-3-1B or
-8B themselves. Without weights the rail reports itself disabled in every verdict — never "safe".
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from flotilla.agents.models.quiet import quiet_model_libraries
from flotilla.audit.errors import ConfigError
from flotilla.guardrails._timing import Stopwatch
from flotilla.guardrails.base import RailPoint, Verdict
from flotilla.guardrails.extras import require

__all__ = [
    "HAZARD_CATEGORIES",
    "LlamaGuardResult",
    "LlamaGuardRail",
    "build_prompt",
    "parse_output",
]

# Llama Guard 3's MLCommons hazard taxonomy (model card, meta-llama/Llama-Guard-3-8B).
HAZARD_CATEGORIES: Mapping[str, str] = {
    "S1": "Violent Crimes.",
    "S2": "Non-Violent Crimes.",
    "S3": "Sex Crimes.",
    "S4": "Child Exploitation.",
    "S5": "Defamation.",
    "S6": "Specialized Advice.",
    "S7": "Privacy.",
    "S8": "Intellectual Property.",
    "S9": "Indiscriminate Weapons.",
    "S10": "Hate.",
    "S11": "Self-Harm.",
    "S12": "Sexual Content.",
    "S13": "Elections.",
    "S14": "Code Interpreter Abuse.",
}

Role = Literal["User", "Agent"]
_CATEGORY = re.compile(r"^S\d{1,2}$")


@dataclass(frozen=True, slots=True)
class LlamaGuardResult:
    safe: bool | None
    """None when the output was neither `safe` nor `unsafe` (treated per `on_unparseable`)."""
    categories: tuple[str, ...]
    raw: str


def build_prompt(text: str, *, role: Role = "User", categories: Sequence[str] | None = None) -> str:
    """The Llama Guard 3 prompt for one message, checked as the `User` or the `Agent` turn."""
    codes = list(categories or HAZARD_CATEGORIES)
    unknown = [c for c in codes if c not in HAZARD_CATEGORIES]
    if unknown:
        raise ConfigError(f"unknown Llama Guard categories {unknown}; use S1..S14")
    category_block = "\n".join(f"{c}: {HAZARD_CATEGORIES[c]}" for c in codes)
    return (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
        f"Task: Check if there is unsafe content in '{role}' messages in conversations according our safety "
        "policy with the below categories.\n\n"
        f"<BEGIN UNSAFE CONTENT CATEGORIES>\n{category_block}\n<END UNSAFE CONTENT CATEGORIES>\n\n"
        f"<BEGIN CONVERSATION>\n\n{role}: {text}\n\n<END CONVERSATION>\n\n"
        f"Provide your safety assessment for ONLY THE LAST {role} message in the above conversation:\n"
        " - First line must read 'safe' or 'unsafe'.\n"
        " - If unsafe, a second line must include a comma-separated list of violated categories."
        "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def parse_output(raw: str) -> LlamaGuardResult:
    """`safe` → safe; `unsafe\\nS1,S10` → unsafe with categories; anything else → unparseable."""
    lines = [ln.strip() for ln in raw.strip().splitlines() if ln.strip()]
    if not lines:
        return LlamaGuardResult(None, (), raw)
    head = lines[0].lower()
    if head == "safe":
        return LlamaGuardResult(True, (), raw)
    if head == "unsafe":
        found = [c.strip().upper() for c in lines[1].split(",")] if len(lines) > 1 else []
        return LlamaGuardResult(False, tuple(c for c in found if _CATEGORY.match(c)), raw)
    return LlamaGuardResult(None, (), raw)


class LlamaGuardRail:
    """Llama Guard on inputs (role User) and outputs (role Agent). Lazy load, one model per rail."""

    name = "llama-guard"
    in_process_model = True
    """The model runs here, from local weights: local whatever the run's sensitivity."""

    def __init__(
        self,
        weights: str | Path | None,
        *,
        categories: Sequence[str] | None = None,
        max_new_tokens: int = 10,
        on_unparseable: Literal["block", "allow"] = "block",
        points: Sequence[RailPoint] = (RailPoint.INPUT, RailPoint.AGENT_OUTPUT, RailPoint.OUTPUT),
    ) -> None:
        self.weights = str(weights) if weights else None
        self.categories = tuple(categories or HAZARD_CATEGORIES)
        build_prompt("", categories=self.categories)  # validate categories now, not at the first check
        self.max_new_tokens = max_new_tokens
        self.on_unparseable = on_unparseable
        self.points = frozenset(points)
        self._loaded = None
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.weights is not None

    def _load(self):
        if self._loaded is None:
            with self._lock:
                if self._loaded is None:
                    require("llama-guard")
                    quiet_model_libraries()
                    from transformers import AutoModelForCausalLM, AutoTokenizer

                    try:
                        tokenizer = AutoTokenizer.from_pretrained(self.weights, local_files_only=True)
                        model = AutoModelForCausalLM.from_pretrained(self.weights, local_files_only=True)
                    except OSError as exc:
                        raise ConfigError(
                            f"cannot load Llama Guard weights from {self.weights!r}: {exc}. Point "
                            "`rails.llama_guard.weights` at a local copy of meta-llama/Llama-Guard-3-1B (or -8B)"
                        ) from None
                    model.eval()
                    self._loaded = (tokenizer, model)
        return self._loaded

    def classify(self, text: str, *, role: Role) -> LlamaGuardResult:
        import torch

        tokenizer, model = self._load()
        prompt = build_prompt(text, role=role, categories=self.categories)
        inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False, pad_token_id=pad)
        raw = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        return parse_output(raw)

    def check_sync(self, text: str, *, point: RailPoint) -> Verdict:
        watch = Stopwatch()
        if not self.enabled:
            return Verdict(
                engine=self.name, rule="disabled", allowed=True, latency_ms=watch.ms, enabled=False,
                detail="no Llama Guard weights configured (rails.llama_guard.weights): this check did not run",
            )
        role: Role = "User" if point in (RailPoint.INPUT, RailPoint.TOOL_ARGS) else "Agent"
        result = self.classify(text, role=role)
        if result.safe is None:
            allowed = self.on_unparseable == "allow"
            rule = "unparseable"
            # Not quoted: the detail becomes a recorded error message; the raw reply stays in `attributes`.
            detail = "Llama Guard's output was neither 'safe' nor 'unsafe'"
        else:
            allowed = result.safe
            rule = "safe" if result.safe else (",".join(result.categories) or "unsafe")
            detail = "" if result.safe else "unsafe: " + ", ".join(
                f"{c} {HAZARD_CATEGORIES.get(c, '').rstrip('.')}" for c in result.categories
            )
        return Verdict(
            engine=self.name, rule=rule, allowed=allowed, latency_ms=watch.ms,
            score=None if result.safe is None else (0.0 if result.safe else 1.0), detail=detail,
            attributes={"role": role, "categories": list(result.categories), "raw": result.raw[:200]},
        )

    async def check(self, text: str, *, point: RailPoint) -> Verdict:
        return await asyncio.to_thread(self.check_sync, text, point=point)
