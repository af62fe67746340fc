"""Finding workflows: built-ins by name (the YAML files beside this module), any YAML path, and
Python workflows registered by name — `workflows:` in flotilla.yaml (passed in as `registered`)
or an entry point in the `flotilla.workflows` group (`name = "package.module:factory"`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from flotilla.audit.errors import ConfigError
from flotilla.graphs.spec import WorkflowSpec, parse_spec

__all__ = ["BUILTIN_DIR", "ENTRY_POINT_GROUP", "list_workflows", "load_workflow", "workflow_path", "python_workflows"]

BUILTIN_DIR = Path(__file__).resolve().parent
ENTRY_POINT_GROUP = "flotilla.workflows"


def python_workflows(registered: Mapping[str, str] | None = None) -> dict[str, str]:
    """Python workflows by name → `module:factory`: entry points, then flotilla.yaml (which wins)."""
    from importlib.metadata import entry_points

    found = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return {**found, **(registered or {})}


def list_workflows(registered: Mapping[str, str] | None = None, *, python: bool = False) -> list[str]:
    """Built-in workflow names; with `registered` or `python=True`, the Python workflows too."""
    names = {p.stem for p in BUILTIN_DIR.glob("*.yaml")}
    if registered is not None or python:
        names |= set(python_workflows(registered))
    return sorted(names)


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


def load_workflow(name_or_path: str | Path, registered: Mapping[str, str] | None = None) -> WorkflowSpec:
    """A workflow by YAML path, built-in name, or registered Python workflow name."""
    path = Path(name_or_path)
    is_file = path.suffix in (".yaml", ".yml") or path.exists() or (BUILTIN_DIR / f"{name_or_path}.yaml").is_file()
    if not is_file:
        python = python_workflows(registered)  # entry points are only scanned when a name is not built in
        if str(name_or_path) in python:
            from flotilla.graphs.factory import python_spec

            return python_spec(str(name_or_path), python[str(name_or_path)])
        if python:
            known = ", ".join(list_workflows(registered, python=True))
            raise ConfigError(f"no workflow named {str(name_or_path)!r}; known workflows: {known} (or give a .yaml path)")
    path = workflow_path(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"workflow file {path} is not UTF-8 text") from None
    return parse_spec(text, source=path)
