"""What the run store keeps of a run's content: the same policy (off / redacted / full) as spans.

Inputs, outputs, step outputs and tool calls are content: under `off` they are not kept (a
SHA-256 and a size stay, so the record still proves what ran), under `redacted` every string
in them goes through the PII redactor, under `full` they are kept. Step metadata (agent, model,
tokens, latency, notes) and error messages are flotilla's own text: kept under every policy,
secrets scrubbed; the user content an error quotes follows the policy (`Sanitizer.error`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

from flotilla.audit.sanitize import ContentPolicy, Sanitizer

__all__ = ["kept_text", "kept_json", "kept_steps", "kept_error", "sha256_of", "content_strings", "STEP_METADATA"]

STEP_METADATA = frozenset(
    {"agent", "model", "alias", "fallback", "ok", "latency_ms", "input_tokens", "output_tokens", "repaired", "notes",
     "error", "tier", "escalated", "verified", "verdict", "status", "cost_usd", "node_kind", "produced_by"}
)
"""Step keys that describe the step rather than carry its content; any other key is content."""


def sha256_of(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def content_strings(value: Any) -> Iterator[str]:
    """Every string in a JSON-like value (to redact them as one batch before `kept_*` walks it)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from content_strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from content_strings(item)


def kept_text(sanitizer: Sanitizer, text: str | None) -> str | None:
    return None if text is None else sanitizer.content(text)


def kept_json(sanitizer: Sanitizer, value: Any) -> Any:
    """A JSON value with every string policed (structure, numbers and booleans stay); None under `off`."""
    if value is None or sanitizer.policy is ContentPolicy.OFF:
        return None
    if isinstance(value, str):
        return sanitizer.content(value)
    if isinstance(value, dict):
        return {key: kept_json(sanitizer, item) for key, item in value.items()}
    if isinstance(value, list):
        return [kept_json(sanitizer, item) for item in value]
    return value


def kept_error(sanitizer: Sanitizer, error: dict[str, Any] | None) -> dict[str, Any] | None:
    """Message intact, the user content it quotes per policy (`Sanitizer.error`)."""
    return sanitizer.error(error)


def kept_steps(sanitizer: Sanitizer, steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for step in steps:
        kept: dict[str, Any] = {}
        for key, value in step.items():
            if key == "error" and isinstance(value, dict):
                kept[key] = kept_error(sanitizer, value)
            elif key in STEP_METADATA:
                kept[key] = _scrubbed(sanitizer, value)
            elif sanitizer.policy is ContentPolicy.OFF:
                if key == "output" and value is not None:
                    kept["output_sha256"] = sha256_of(value)
            else:
                kept[key] = kept_json(sanitizer, value)
        out.append(kept)
    return out


def _scrubbed(sanitizer: Sanitizer, value: Any) -> Any:
    if isinstance(value, str):
        return sanitizer.scrub(value)
    if isinstance(value, list):
        return [_scrubbed(sanitizer, item) for item in value]
    return value
