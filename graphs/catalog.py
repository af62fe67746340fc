"""Finding workflows: built-ins by name (the YAML files beside this module) or any path."""

from __future__ import annotations

from pathlib import Path

from flotilla.audit.errors import ConfigError
from flotilla.graphs.spec import WorkflowSpec, parse_spec

__all__ = ["BUILTIN_DIR", "list_workflows", "load_workflow", "workflow_path"]

BUILTIN_DIR = Path(__file__).resolve().parent


def list_workflows() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def workflow_path(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"workflow file {path} does not exist")
        return path.resolve()
    builtin = BUILTIN_DIR / f"{name_or_path}.yaml"
    if builtin.is_file():
        return builtin
    raise ConfigError(f"no workflow named {str(name_or_path)!r}; built-in workflows: {', '.join(list_workflows())} (or give a .yaml path)")


def load_workflow(name_or_path: str | Path) -> WorkflowSpec:
    path = workflow_path(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"workflow file {path} is not UTF-8 text") from None
    return parse_spec(text, source=path)
