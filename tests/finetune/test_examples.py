"""Chat-format training data: every bad line is an error naming the file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flotilla.agents.finetune.data import ExampleError, conversation, dedupe, read_examples, split_examples

GOOD = json.dumps(conversation([{"role": "system", "content": "Read."}, {"role": "user", "content": "INV-1"}], {"invoice_number": "INV-1"}))


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("{not json", "not JSON"),
        (json.dumps({"messages": [{"role": "user", "content": "INV-1"}]}), "no assistant message"),
        (json.dumps({"messages": [{"role": "user", "content": "INV-1"}, {"role": "assistant", "content": "INV-1, I think"}]}), "not valid JSON"),
        (json.dumps({"messages": [{"role": "robot", "content": "x"}]}), "role of system, user or assistant"),
        (json.dumps({"prompt": "x", "completion": "{}"}), '{"messages": [...]}'),
    ],
)
def test_a_bad_line_is_named(tmp_path: Path, line: str, says: str) -> None:
    data = tmp_path / "train.jsonl"
    data.write_text(f"{GOOD}\n\n{GOOD}\n{line}\n")
    with pytest.raises(ExampleError) as caught:
        read_examples(data)
    assert caught.value.message.startswith(f"{data}:4: ") and says in caught.value.message


def test_good_lines_read_deduplicated_and_split_stably(tmp_path: Path) -> None:
    examples = [conversation([{"role": "user", "content": f"INV-{i}"}], {"n": i}) for i in range(40)]
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps(e) for e in examples + examples[:5]) + "\n")
    unique = dedupe(read_examples(data))
    assert len(unique) == 40
    train, held = split_examples(unique, 0.2)
    assert held and len(train) + len(held) == 40
    assert split_examples(list(reversed(unique)), 0.2)[1] == list(reversed(held))  # by content, not position
