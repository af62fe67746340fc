"""Fine-tuning examples: chat-format JSONL, one conversation per line.

    {"messages": [{"role": "system", "content": …}, {"role": "user", "content": …},
                  {"role": "assistant", "content": "<the JSON answer>"}]}

The last message is the answer the model learns (the only tokens with a loss); it must be JSON,
because every flotilla agent answers JSON. A bad line is an error naming the file and line.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from flotilla.audit.errors import ConfigError

__all__ = ["ExampleError", "read_examples", "write_examples", "split_examples", "dedupe", "conversation"]


class ExampleError(ConfigError):
    """A training-data line is not a usable chat example."""

    code = "invalid_example"


def conversation(prompt: list[dict[str, str]], answer: Any) -> dict[str, Any]:
    """One example: the messages the agent sent, then its accepted answer as compact JSON."""
    text = answer if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False)
    return {"messages": [*({"role": m["role"], "content": m["content"]} for m in prompt), {"role": "assistant", "content": text}]}


def read_examples(path: Path) -> list[dict[str, Any]]:
    """Every example in a chat JSONL file, checked line by line."""
    if not path.is_file():
        raise ExampleError(f"{path}: no such file (write one with `flotilla export-finetune`)")
    examples = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            examples.append(_checked(line, f"{path}:{number}"))
    if not examples:
        raise ExampleError(f"{path}: no examples in it")
    return examples


def _checked(line: str, where: str) -> dict[str, Any]:
    try:
        example = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ExampleError(f"{where}: not JSON ({exc.msg} at column {exc.colno})") from None
    messages = example.get("messages") if isinstance(example, dict) else None
    if not isinstance(messages, list) or not messages:
        raise ExampleError(f'{where}: needs {{"messages": [...]}} with system/user messages and an assistant answer')
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant"):
            raise ExampleError(f"{where}: messages[{i}] needs a role of system, user or assistant")
        if not isinstance(message.get("content"), str):
            raise ExampleError(f"{where}: messages[{i}].content must be a string")
    if messages[-1]["role"] != "assistant":
        raise ExampleError(f"{where}: no assistant message at the end (the answer to learn)")
    if len(messages) < 2:
        raise ExampleError(f"{where}: an assistant answer without a prompt before it")
    try:
        json.loads(messages[-1]["content"])
    except json.JSONDecodeError as exc:
        raise ExampleError(f"{where}: the assistant answer is not valid JSON ({exc.msg} at column {exc.colno})") from None
    return {"messages": messages}


def dedupe(examples: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Examples in order, each distinct conversation once."""
    seen: set[str] = set()
    out = []
    for example in examples:
        key = _key(example)
        if key not in seen:
            seen.add(key)
            out.append(example)
    return out


def split_examples(examples: list[dict[str, Any]], validation: float, *, seed: int = 0) -> tuple[list, list]:
    """(train, validation): a held-back share, chosen by a hash of the prompt so the same
    conversation always lands on the same side whatever else is exported with it."""
    if not 0 <= validation < 1:
        raise ConfigError(f"the validation share must be in [0, 1), not {validation}")
    train, held = [], []
    for example in examples:
        prompt = json.dumps(example["messages"][:-1], sort_keys=True, ensure_ascii=False)
        bucket = random.Random(f"{seed}:{prompt}").random()
        (held if bucket < validation else train).append(example)
    if validation and not held and len(train) > 1:
        held.append(train.pop())
    return train, held


def write_examples(path: Path, examples: Iterable[dict[str, Any]]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8") as out:
        for example in examples:
            out.write(json.dumps(example, ensure_ascii=False) + "\n")
            count += 1
    return count


def _key(example: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(example["messages"], sort_keys=True, ensure_ascii=False).encode()).hexdigest()
