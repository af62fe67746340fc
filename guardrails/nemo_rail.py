"""NeMo Guardrails as a check: input/output rails only, on a flotilla model, offline embeddings.

NeMo's full `generate` pipeline costs several model calls per message (user intent, bot message,
self-checks). flotilla needs a yes/no at a boundary, so it calls `LLMRails.check_async` with
one rail type: the configured input or output flows run, and only the self-check calls the model
(<= 1 call per check point; NeMo's YARA injection detection costs none).

The model is a flotilla `ModelClient` (the alias's client: the embedded engine by default, or an
OpenAI-compatible endpoint such as vLLM), adapted to NeMo's `LLMModel` protocol in-process.
Why not point NeMo at a base_url: that would need an HTTP server in front of the embedded model
and a second copy of the weights or a port to manage; the adapter reuses the client the runner
already holds, works offline, and lets flotilla count and trace every call.
"""

from __future__ import annotations

import os

# NeMo reads this at import time and on each call; flotilla never sends usage statistics.
os.environ["NEMO_GUARDRAILS_NO_USAGE_STATS"] = "1"

import asyncio  # noqa: E402
from collections.abc import AsyncIterator, Sequence  # noqa: E402
from importlib.resources import files  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import yaml  # noqa: E402

from flotilla.agents.models.base import ChatRequest, ModelClient  # noqa: E402
from flotilla.guardrails._timing import Stopwatch  # noqa: E402
from flotilla.guardrails.base import RailPoint, Verdict  # noqa: E402
from flotilla.guardrails.embeddings import minilm_path  # noqa: E402
from flotilla.guardrails.extras import require  # noqa: E402

require("nemo")  # the [rails] extra's import site: an install hint instead of an ImportError

__all__ = ["NemoRail", "FlotillaNemoLLM", "default_nemo_config_dir", "build_rails_config"]

_INPUT_POINTS = frozenset({RailPoint.INPUT, RailPoint.TOOL_ARGS})


def default_nemo_config_dir() -> Path:
    return Path(str(files("flotilla.guardrails").joinpath("nemo")))


class FlotillaNemoLLM:
    """NeMo `LLMModel` over a flotilla `ModelClient`; counts calls for traces and the bench."""

    def __init__(self, client: ModelClient, *, max_tokens: int = 8) -> None:
        self.client = client
        self.max_tokens = max_tokens
        self.calls = 0

    @property
    def model_name(self) -> str:
        return self.client.name

    @property
    def provider_name(self) -> str | None:
        return "flotilla"

    @property
    def provider_url(self) -> str | None:
        return None

    @staticmethod
    def _messages(prompt: Any) -> list[dict[str, str]]:
        if isinstance(prompt, str):
            return [{"role": "user", "content": prompt}]
        out = []
        for message in prompt:
            role = getattr(message.role, "value", message.role)
            content = message.content if isinstance(message.content, str) else str(message.content or "")
            out.append({"role": "user" if role == "tool" else role, "content": content})
        return out

    async def generate_async(self, prompt: Any, *, stop: list[str] | None = None, **kwargs: Any):
        from nemoguardrails.types import LLMResponse, UsageInfo

        self.calls += 1
        max_tokens = kwargs.get("max_tokens") or self.max_tokens
        result = await self.client.complete(
            ChatRequest(messages=self._messages(prompt), max_tokens=int(max_tokens), temperature=kwargs.get("temperature") or 0.0)
        )
        text = result.text
        for s in stop or []:
            if s and s in text:
                text = text.split(s, 1)[0]
        usage = UsageInfo(result.input_tokens, result.output_tokens, result.input_tokens + result.output_tokens)
        return LLMResponse(content=text, model=result.model, finish_reason="stop", usage=usage)

    async def stream_async(self, prompt: Any, *, stop: list[str] | None = None, **kwargs: Any) -> AsyncIterator[Any]:
        from nemoguardrails.types import LLMResponseChunk

        response = await self.generate_async(prompt, stop=stop, **kwargs)
        yield LLMResponseChunk(delta_content=response.content, finish_reason="stop")


def build_rails_config(config_dir: Path, *, domain: str, embeddings_path: Path | None = None):
    """RailsConfig from flotilla's config dir, with the domain filled in and local embeddings."""
    from nemoguardrails import RailsConfig

    raw = yaml.safe_load((config_dir / "config.yml").read_text(encoding="utf-8")) or {}
    prompts_file = config_dir / "prompts.yml"
    if prompts_file.is_file():
        prompts_text = prompts_file.read_text(encoding="utf-8").replace("{{ domain }}", domain)
        raw.update(yaml.safe_load(prompts_text) or {})
    local = str(embeddings_path or minilm_path())
    models = [m for m in raw.get("models", []) if m.get("type") != "embeddings"]
    models.append({"type": "embeddings", "engine": "SentenceTransformers", "model": local})
    raw["models"] = models
    colang = "\n\n".join(p.read_text(encoding="utf-8") for p in sorted(config_dir.glob("*.co")))
    return RailsConfig.from_content(colang_content=colang or None, config=raw)


class NemoRail:
    """Input self-check + topic control, output self-check, YARA injection detection."""

    name = "nemo"

    def __init__(
        self,
        model: ModelClient,
        *,
        domain: str = "invoice and business-document processing (invoices, suppliers, payments, procurement)",
        config_dir: Path | None = None,
        points: Sequence[RailPoint] = (RailPoint.INPUT, RailPoint.AGENT_OUTPUT, RailPoint.OUTPUT),
        embeddings_path: Path | None = None,
    ) -> None:
        self.llm = FlotillaNemoLLM(model)
        self.domain = domain
        self.config_dir = config_dir or default_nemo_config_dir()
        self.points = frozenset(points)
        self._embeddings_path = embeddings_path
        self._rails = None
        self._lock = asyncio.Lock()

    @property
    def model_client(self) -> ModelClient:
        """The model NeMo's self-checks call; the pipeline applies the run's locality policy to it."""
        return self.llm.client

    async def rails(self):
        """The LLMRails instance, built on first use (importing NeMo takes seconds)."""
        async with self._lock:
            if self._rails is None:
                from nemoguardrails import LLMRails

                config = build_rails_config(self.config_dir, domain=self.domain, embeddings_path=self._embeddings_path)
                self._rails = LLMRails(config, llm=self.llm)
        return self._rails

    async def check(self, text: str, *, point: RailPoint) -> Verdict:
        from nemoguardrails.rails.llm.options import RailStatus, RailType

        rails = await self.rails()
        watch = Stopwatch()
        calls_before = self.llm.calls
        if point in _INPUT_POINTS:
            result = await rails.check_async([{"role": "user", "content": text}], rail_types=[RailType.INPUT])
        else:
            result = await rails.check_async([{"role": "assistant", "content": text}], rail_types=[RailType.OUTPUT])
        calls = self.llm.calls - calls_before
        blocked = result.status == RailStatus.BLOCKED
        return Verdict(
            engine=self.name,
            rule=result.rail or ("none" if not blocked else "nemo"),
            allowed=not blocked,
            latency_ms=watch.ms,
            score=1.0 if blocked else 0.0,
            detail=f"NeMo rail '{result.rail}' blocked the message" if blocked else "",
            attributes={"model_calls": calls, "status": result.status.value, "model": self.llm.model_name},
        )

    async def generate(self, text: str) -> tuple[str, int]:
        """NeMo's full generate pipeline on the same config — for the bench's comparison only."""
        rails = await self.rails()
        before = self.llm.calls
        response = await rails.generate_async(messages=[{"role": "user", "content": text}])
        content = response["content"] if isinstance(response, dict) else str(response)
        return content, self.llm.calls - before
