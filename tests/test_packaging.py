"""The wheel installs one import name, `flotilla`, and carries every module and data file the
runtime reads. The expected lists come from the source tree, so a new subpackage or data folder
that pyproject.toml forgets fails here, not in a user's install."""

from __future__ import annotations

import zipfile
from pathlib import Path, PurePosixPath

import pytest

from tests.support.wheel import SOURCE_FOLDERS, build_wheel, source_files


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    with zipfile.ZipFile(build_wheel(tmp_path_factory.mktemp("wheel"))) as built:
        yield built


def shipped(wheel: zipfile.ZipFile) -> set[str]:
    return {name for name in wheel.namelist() if not name.endswith("/")}


def test_the_only_top_level_import_package_is_flotilla(wheel: zipfile.ZipFile) -> None:
    tops = {PurePosixPath(name).parts[0] for name in shipped(wheel)}
    dist_info = {t for t in tops if t.endswith(".dist-info")}
    assert tops - dist_info == {"flotilla"}
    assert len(dist_info) == 1
    top_level = wheel.read(f"{dist_info.pop()}/top_level.txt").decode().split()
    assert top_level == ["flotilla"]
    # not `agents`, `guardrails`, … at the root: those belong to other projects
    assert not any(name.startswith(f"{folder}/") for name in shipped(wheel) for folder in SOURCE_FOLDERS)


def test_every_module_of_the_source_folders_is_in_the_wheel(wheel: zipfile.ZipFile) -> None:
    modules = [p for p in source_files() if p.suffix == ".py"]
    assert len(modules) > 50  # the walk really found the sources
    missing = [p.as_posix() for p in modules if f"flotilla/{p.as_posix()}" not in shipped(wheel)]
    assert not missing, f"modules missing from the wheel (add their package to [tool.setuptools] packages): {missing}"


def test_every_data_file_the_runtime_reads_is_in_the_wheel(wheel: zipfile.ZipFile) -> None:
    data = [p for p in source_files() if p.suffix != ".py"]
    missing = [p.as_posix() for p in data if f"flotilla/{p.as_posix()}" not in shipped(wheel)]
    assert not missing, f"data files missing from the wheel (add them to [tool.setuptools.package-data]): {missing}"
    # the files each part of the runtime opens by name, so an over-broad exclusion cannot hide them
    for required in (
        "graphs/document_triage.yaml", "graphs/research.yaml", "graphs/samples/invoice.txt", "graphs/router.yaml", "graphs/routing/examples.yaml",
        "agents/document_triage/extract.md", "agents/research/plan.md",
        "guardrails/defaults.yaml", "guardrails/nemo/config.yml", "guardrails/nemo/rails.co",
        "guardrails/models/injection_classifier.npz", "guardrails/data/benign_requests.txt",
        "audit/web/templates/base.html", "audit/web/static/audit.css", "audit/migrations/script.py.mako",
        "audit/migrations/versions/0001_initial.py",
        "mcp_servers/ledger/seed.sql", "mcp_servers/documents/corpus/ap-invoice-policy.md",
    ):
        assert Path(required) in data or required.endswith(".py"), f"{required} is no longer in the source tree"
        assert f"flotilla/{required}" in shipped(wheel)


def test_the_cli_entry_point_targets_the_flotilla_namespace(wheel: zipfile.ZipFile) -> None:
    dist_info = next(n.split("/")[0] for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt"))
    entry_points = wheel.read(f"{dist_info}/entry_points.txt").decode()
    assert "flotilla = flotilla.runtime.cli:main" in entry_points
