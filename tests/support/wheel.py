"""Build flotilla's wheel the way an image build or a release does: from a clean copy of the
sources (no stale build/ or egg-info of the working tree), offline (no build isolation)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["REPO", "SOURCE_FOLDERS", "NOT_SHIPPED", "source_files", "build_wheel"]

REPO = Path(__file__).resolve().parents[2]
SOURCE_FOLDERS = ("agents", "audit", "graphs", "guardrails", "mcp_servers", "runtime", "tools")
"""The top-level folders the wheel installs as `flotilla.<folder>`."""

NOT_SHIPPED = {
    "audit/docs": "the README's screenshot of the audit page",
    "mcp_servers/npm": "third-party MCP servers the tests run against (installed by `make setup-test`)",
}
"""Folders inside the source folders that are deliberately not in the wheel, and why."""


def _skipped(relative: Path) -> bool:
    parts = relative.parts
    return "__pycache__" in parts or relative.suffix == ".pyc" or any(
        relative.as_posix().startswith(prefix + "/") for prefix in NOT_SHIPPED
    )


def source_files() -> list[Path]:
    """Every file under the source folders that belongs in the wheel, relative to the repo."""
    found = []
    for folder in SOURCE_FOLDERS:
        for path in (REPO / folder).rglob("*"):
            relative = path.relative_to(REPO)
            if path.is_file() and not _skipped(relative):
                found.append(relative)
    return sorted(found)


def build_wheel(out_dir: Path) -> Path:
    """Build the wheel into `out_dir` from a copy of pyproject.toml, README.md and the source folders."""
    src = out_dir / "src"
    src.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "node_modules")
    for folder in SOURCE_FOLDERS:
        shutil.copytree(REPO / folder, src / folder, ignore=ignore)
    dist = out_dir / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"building the wheel failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    wheels = list(dist.glob("flotilla-*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"expected one wheel in {dist}, found {wheels}")
    return wheels[0]
