"""JSON-schema constraints for the embedded engine, with xgrammar (the grammar engine vLLM uses).

A schema is compiled once into a token-level grammar and cached by the hash of its
canonical JSON; each request gets its own cheap `GrammarMatcher` over the shared compiled
grammar. Whitespace between JSON tokens is not free (`any_whitespace=False`): a 135M model
given the choice happily emits newlines until it runs out of tokens. Nor are digits: a number
the schema leaves unbounded is held to ±10^15, an integer to ±(2^53 - 1) (`_bounded`), or the
model may run one on to the token budget ("amount": 1200000000…).
"""

from __future__ import annotations

import hashlib
import json
import threading
from typing import Any

import torch
import xgrammar

from flotilla.agents.models.base import ModelError

__all__ = ["InvalidModelRequest", "InvalidSchema", "GrammarCache", "Constraint", "JSON_OBJECT"]

JSON_OBJECT: dict[str, Any] = {"type": "object"}
"""What `response_format: {"type": "json_object"}` asks for: any JSON object."""


class InvalidModelRequest(ModelError):
    """The request itself cannot be served (no messages, prompt longer than the context, …)."""

    code = "invalid_model_request"


class InvalidSchema(InvalidModelRequest):
    """The JSON schema given for structured output cannot be used."""

    code = "invalid_schema"


class GrammarCache:
    def __init__(self, tokenizer: Any, vocab_size: int, stop_token_ids: list[int]) -> None:
        self.vocab_size = vocab_size
        info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=stop_token_ids)
        self._compiler = xgrammar.GrammarCompiler(info, max_threads=2)
        self._compiled: dict[str, xgrammar.CompiledGrammar] = {}
        self._lock = threading.Lock()
        self._stop_ids = list(stop_token_ids)

    @staticmethod
    def key(schema: dict[str, Any]) -> str:
        return hashlib.sha256(json.dumps(schema, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def compile(self, schema: dict[str, Any]) -> xgrammar.CompiledGrammar:
        """The compiled grammar for `schema` (from the cache when seen before), or InvalidSchema."""
        if not isinstance(schema, dict):
            raise InvalidSchema(f"a JSON schema must be an object, got {type(schema).__name__}")
        key = self.key(schema)
        with self._lock:
            compiled = self._compiled.get(key)
        if compiled is not None:
            return compiled
        _check_schema(schema)
        try:
            compiled = self._compiler.compile_json_schema(json.dumps(_bounded(schema)), any_whitespace=False, strict_mode=True)
        except Exception as exc:  # xgrammar raises RuntimeError/ValueError with its parser's message
            raise InvalidSchema(f"cannot turn the JSON schema into a grammar: {exc}") from None
        with self._lock:
            self._compiled.setdefault(key, compiled)
        return compiled

    def matcher(self, schema: dict[str, Any]) -> "Constraint":
        return Constraint(xgrammar.GrammarMatcher(self.compile(schema)), self.vocab_size, self._stop_ids)


class Constraint:
    """One request's grammar state: masks logits, follows accepted tokens."""

    def __init__(self, matcher: xgrammar.GrammarMatcher, vocab_size: int, stop_ids: list[int]) -> None:
        self._matcher = matcher
        self._bitmask = xgrammar.allocate_token_bitmask(1, vocab_size)
        self._vocab_size = vocab_size
        self._stop_ids = stop_ids

    def fill(self) -> bool:
        """Compute the allowed next tokens; False when only a stop token is allowed (output done)."""
        self._matcher.fill_next_token_bitmask(self._bitmask)
        if not self._matcher.is_completed():
            return True
        # Completed and nothing but a stop token allowed: skip the forward pass that would only pick it.
        mask = self._bitmask.clone()
        for token in self._stop_ids:
            word = int(mask[0, token // 32]) & ~(1 << (token % 32)) & 0xFFFFFFFF
            mask[0, token // 32] = word - (1 << 32) if word >= 1 << 31 else word  # back to signed int32
        return bool(mask.any())

    def apply(self, logits: torch.Tensor) -> None:
        xgrammar.apply_token_bitmask_inplace(logits.view(1, -1), self._bitmask, vocab_size=self._vocab_size)

    def accept(self, token_id: int) -> None:
        if not self._matcher.accept_token(token_id):
            raise ModelError(f"grammar rejected token {token_id} it had allowed (engine bug)")

    @property
    def terminated(self) -> bool:
        return self._matcher.is_terminated()


NUMBER_LIMIT = 10**15
"""The bound `_bounded` gives an unbounded number (xgrammar's ranges then allow 6 decimals)."""
INTEGER_LIMIT = 2**53 - 1
"""... and an unbounded integer: the largest a double (JavaScript's, JSON parsers') holds exactly."""
_LIMITS = {"number": NUMBER_LIMIT, "integer": INTEGER_LIMIT}
_NOT_SCHEMAS = frozenset({"enum", "const", "default", "examples"})  # values, not subschemas


def _bounded(node: Any) -> Any:
    """`node` (a schema) with every number or integer that has no bound of its own given ±its limit,
    for the grammar only (replies are validated against the schema as given)."""
    if isinstance(node, list):
        return [_bounded(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: value if key in _NOT_SCHEMAS else _bounded(value) for key, value in node.items()}
    kind = node.get("type")
    limit = _LIMITS.get(kind) if isinstance(kind, str) else None  # ["number", "null"]: left as it is
    if limit is not None:  # a side the schema bounds keeps its bound; the other stays consistent with it
        low, high = node.get("minimum", node.get("exclusiveMinimum")), node.get("maximum", node.get("exclusiveMaximum"))
        if low is None:
            out["minimum"] = -limit if not isinstance(high, (int, float)) else min(-limit, high)
        if high is None:
            out["maximum"] = limit if not isinstance(low, (int, float)) else max(limit, low)
    return out


def _check_schema(schema: dict[str, Any]) -> None:
    from jsonschema import exceptions, validators

    try:
        validators.validator_for(schema).check_schema(schema)
    except exceptions.SchemaError as exc:
        where = "/".join(map(str, exc.absolute_path)) or "(root)"
        raise InvalidSchema(f"invalid JSON schema at {where}: {exc.message}") from None
