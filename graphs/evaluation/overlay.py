"""Eval configurations: a `flotilla.yaml` overlay per configuration, deep-merged over the project's.

An overlay holds flotilla.yaml keys (`models:` aliases and endpoints, `prices:`, …) plus two
sections applied to the evaluated workflow: `agents:` (per-agent overrides such as tiers
`model: [a, b]`, `policy: null`, `max_tokens`) and `rails:`. So "the same workflow on specialist
X, on the frontier, or as a cascade" is three small files.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from flotilla.audit.errors import ConfigError
from flotilla.graphs.spec import SpecError, WorkflowSpec, parse_spec
from flotilla.guardrails.config import merge_overrides

__all__ = ["EvalConfig", "load_overlay", "check_config", "WORKFLOW_KEYS"]

WORKFLOW_KEYS = frozenset({"agents", "rails"})
"""Overlay sections that change the evaluated workflow rather than flotilla.yaml."""
NOTE_KEYS = frozenset({"description"})


@dataclass(frozen=True)
class EvalConfig:
    name: str
    path: Path
    description: str
    settings_data: dict[str, Any]
    """The project's flotilla.yaml with the overlay merged in (the runtime is built from it)."""
    spec: WorkflowSpec
    """The workflow with the overlay's `agents:` and `rails:` applied."""

    @property
    def fingerprint(self) -> str:
        """Changes whenever anything the runs depend on changes: finished results of another
        fingerprint are not reused on resume."""
        blob = json.dumps([self.settings_data, self.spec.version()], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _normalised_models(data: dict[str, Any]) -> dict[str, Any]:
    models = data.get("models")
    if isinstance(models, Mapping):  # `specialist_extract` and `specialist-extract` are one alias
        data = {**data, "models": {str(k).lower().replace("_", "-"): v for k, v in models.items()}}
    return data


def load_overlay(path: Path, base: dict[str, Any], workflow: WorkflowSpec, settings_keys: Iterable[str]) -> EvalConfig:
    """`path` merged over `base` (the project's flotilla.yaml as a mapping) and over `workflow`."""
    if not path.is_file():
        raise ConfigError(f"config {path} does not exist (a config is a flotilla.yaml overlay, e.g. configs/embedded.yaml)")
    try:
        overlay = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path}: malformed YAML ({exc})") from None
    if not isinstance(overlay, dict):
        raise ConfigError(f"config {path}: must be a YAML mapping of flotilla.yaml keys (models:, prices:, …) and agents:/rails:")
    allowed = set(settings_keys) | WORKFLOW_KEYS | NOTE_KEYS
    unknown = sorted(set(overlay) - allowed)
    if unknown:
        raise ConfigError(f"config {path}: unknown key(s) {', '.join(unknown)}; an overlay may set {', '.join(sorted(allowed))}")
    settings_part = {k: v for k, v in overlay.items() if k not in WORKFLOW_KEYS | NOTE_KEYS}
    merged = merge_overrides(_normalised_models(base), _normalised_models(settings_part))
    return EvalConfig(
        name=path.stem,
        path=path,
        description=str(overlay.get("description", "")),
        settings_data=merged,
        spec=_overlaid_workflow(workflow, overlay, path),
    )


def _overlaid_workflow(workflow: WorkflowSpec, overlay: dict[str, Any], path: Path) -> WorkflowSpec:
    agents = overlay.get("agents") or {}
    rails = overlay.get("rails")
    if not agents and rails is None:
        return workflow
    if workflow.kind == "python":
        raise ConfigError(f"config {path}: `agents:`/`rails:` overlays apply to YAML workflows; {workflow.name} is a Python workflow")
    if not isinstance(agents, dict):
        raise ConfigError(f"config {path}: `agents:` maps an agent name to the settings it overrides")
    unknown = sorted(set(agents) - set(workflow.agents))
    if unknown:
        raise ConfigError(f"config {path}: agents: workflow {workflow.name!r} has no agent {', '.join(map(repr, unknown))}; its agents: {', '.join(workflow.agents)}")
    data = workflow.model_dump(by_alias=True, exclude_unset=True)
    data["agents"] = merge_overrides(data.get("agents", {}), agents)
    if rails is not None:
        data["rails"] = merge_overrides(data.get("rails") or {}, rails)
    try:  # re-parsed beside the original file, so relative prompt paths still resolve
        return parse_spec(yaml.safe_dump(data, sort_keys=False), source=workflow.source)
    except SpecError as exc:
        raise ConfigError(f"config {path}: " + "; ".join(p.message for p in exc.problems)) from None


def check_config(config: EvalConfig, known_aliases: Iterable[str], tool_servers: Iterable[str] | None = None) -> None:
    """What `flotilla validate` would say of the workflow under this config, as one ConfigError."""
    from flotilla.graphs.build import check_spec

    problems = check_spec(config.spec, known_aliases, tool_servers=tool_servers)
    if problems:
        raise ConfigError(f"config {config.path}: " + "; ".join(p.message for p in problems))
