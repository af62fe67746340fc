"""Idempotency keys for MCP tool calls: the same call of the same step gets the same key, always.

Every `tools/call` flotilla sends carries a key in the request `_meta` under
`IDEMPOTENCY_META_KEY`. Inside a workflow run the key is derived, not drawn:

    sha256(run id, node path, LangGraph step, branch path, call index, tool, canonical arguments)

LangGraph gives a node the run (`thread_id`), its own name and superstep (`langgraph_step`)
and its branch (`langgraph_path`, which tells Send fan-out tasks apart); all of them are the
same when the step runs again after a crash or a retry, so the call it repeats carries the same
key and a server that honours keys (the bundled ledger) returns the first result instead of
acting twice. `call_index` is the caller's count of calls within the step (a tool node makes
one; the agent tool loop numbers its turns), so two deliberate identical calls stay two.

Outside LangGraph — `flotilla tools call`, a sub-agent that sets its own scope — a caller may
set the scope with `tool_call_scope(run_id, step)`; with neither, each call gets a fresh
random key (nothing can repeat it by accident).

A server declares that it honours keys by putting `HONOURS_KEYS_META: true` in a tool's
`_meta` (or the operator says so for the whole server: `honours_idempotency_keys: true` in
flotilla.yaml). flotilla then may re-send an interrupted call to it with the same key.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

__all__ = [
    "IDEMPOTENCY_META_KEY",
    "HONOURS_KEYS_META",
    "CallScope",
    "current_scope",
    "tool_call_scope",
    "idempotency_key",
]

IDEMPOTENCY_META_KEY = "flotilla.dev/idempotency-key"
"""The request `_meta` key carrying the call's key (a custom prefix, as the MCP spec asks)."""
HONOURS_KEYS_META = "flotilla.dev/honours-idempotency-key"
"""A tool `_meta` flag: a repeated call with a seen key returns the first result, acting once."""


@dataclass(frozen=True, slots=True)
class CallScope:
    """Where a tool call happens: the run and the step identity the key is derived from."""

    run_id: str
    step: str
    """Node path, superstep and branch, e.g. `record@7:__pregel_pull/record` (stable across a resume)."""


_SCOPE: ContextVar[CallScope | None] = ContextVar("flotilla_tool_call_scope", default=None)


@contextlib.contextmanager
def tool_call_scope(run_id: str, step: str) -> Iterator[CallScope]:
    """Set the scope explicitly (code that calls tools outside a LangGraph node, or a sub-agent
    that must keep its calls apart from its siblings'). Wins over the LangGraph context."""
    scope = CallScope(run_id, step)
    token = _SCOPE.set(scope)
    try:
        yield scope
    finally:
        _SCOPE.reset(token)


def current_scope() -> CallScope | None:
    """The explicit scope, else the LangGraph node this code runs in, else None."""
    explicit = _SCOPE.get()
    if explicit is not None:
        return explicit
    try:
        from langgraph.config import get_config  # noqa: PLC0415 - only inside a run
    except ImportError:  # pragma: no cover - langgraph is a core dependency
        return None
    try:
        config = get_config()
    except RuntimeError:  # not inside a LangGraph runnable
        return None
    run_id = (config.get("configurable") or {}).get("thread_id")
    metadata = config.get("metadata") or {}
    node = metadata.get("langgraph_node")
    if not run_id or node is None:
        return None
    # The checkpoint namespace is `parent:<task id>|child:<task id>`: keep the node names only
    # (task ids are derived from checkpoint ids, which a different engine may not reproduce).
    namespace = "/".join(part.split(":", 1)[0] for part in str(metadata.get("langgraph_checkpoint_ns", "")).split("|") if part)
    branch = "/".join(str(p) for p in metadata.get("langgraph_path", ()) if isinstance(p, (str, int)))
    return CallScope(str(run_id), f"{namespace or node}@{metadata.get('langgraph_step', '?')}:{branch}")


def canonical_arguments(arguments: dict[str, Any]) -> str:
    """The arguments as one canonical JSON text (sorted keys, no spaces) for hashing."""
    return json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def idempotency_key(tool: str, arguments: dict[str, Any], call_index: int | str = 0, scope: CallScope | None = None) -> str:
    """The key of this call: derived from the scope (see the module doc), random without one."""
    scope = scope or current_scope()
    if scope is None:
        return f"flk-{uuid.uuid4().hex}"
    material = json.dumps([scope.run_id, scope.step, str(call_index), tool, canonical_arguments(arguments)], ensure_ascii=False)
    return f"flk-{hashlib.sha256(material.encode('utf-8')).hexdigest()[:48]}"
