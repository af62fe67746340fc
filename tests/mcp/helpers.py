"""Helpers for the MCP tests: configs of real servers (bundled, test-local, npm), ports, processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tools import StdioServerConfig

REPO = Path(__file__).resolve().parents[2]
NPM_BIN = REPO / "mcp_servers" / "npm" / "node_modules" / ".bin"
FAULT_SERVER = Path(__file__).with_name("servers") / "fault_server.py"


def npm_bin(name: str) -> Path:
    path = NPM_BIN / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make setup-test` (installs mcp_servers/npm)")
    return path


def ledger_config(**overrides: object) -> StdioServerConfig:
    return StdioServerConfig(command=sys.executable, args=["-m", "mcp_servers.ledger"], cwd=REPO, **overrides)


def documents_config() -> StdioServerConfig:
    return StdioServerConfig(command=sys.executable, args=["-m", "mcp_servers.documents"], cwd=REPO)


def fault_config(tmp_path: Path, description: str = "Echo the text back.", **overrides: object) -> StdioServerConfig:
    env = {"FAULT_DESCRIPTION": description, "FAULT_CALL_LOG": str(tmp_path / "calls.log")}
    return StdioServerConfig(command=sys.executable, args=[str(FAULT_SERVER)], env=env, cwd=REPO, **overrides)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def start_everything_http(port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1"}
    proc = subprocess.Popen(
        [str(npm_bin("mcp-server-everything")), "streamableHttp"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_for_port(port)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(5)
