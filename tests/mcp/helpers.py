"""Helpers for the MCP tests: configs of real servers (bundled, test-local, npm), ports, processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flotilla.tools import StdioServerConfig

REPO = Path(__file__).resolve().parents[2]
NPM_BIN = REPO / "mcp_servers" / "npm" / "node_modules" / ".bin"
FAULT_SERVER = Path(__file__).with_name("servers") / "fault_server.py"


def npm_bin(name: str) -> Path:
    path = NPM_BIN / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make setup-test` (installs mcp_servers/npm)")
    return path


def ledger_config(**overrides: object) -> StdioServerConfig:
    return StdioServerConfig(command=sys.executable, args=["-m", "flotilla.mcp_servers.ledger"], cwd=REPO, **overrides)


def documents_config() -> StdioServerConfig:
    return StdioServerConfig(command=sys.executable, args=["-m", "flotilla.mcp_servers.documents"], cwd=REPO)


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


# -- the gateway: a runner over an instant canned model ---------------------------------

from tests.support.triage import TRIAGE_ANSWERS  # noqa: E402


def canned_reply(schema_name: str, json_schema: dict | None) -> str:
    """The canned answer for a request: by output schema name, or wrapped as a tool-loop final."""
    import json as _json

    if schema_name in TRIAGE_ANSWERS:
        return _json.dumps(TRIAGE_ANSWERS[schema_name])
    branches = (json_schema or {}).get("anyOf", [json_schema or {}])
    final = next(b["properties"]["final"] for b in branches if "final" in b.get("properties", {}))
    title = final.get("title") or next(iter(TRIAGE_ANSWERS))
    return _json.dumps({"final": TRIAGE_ANSWERS[title]})


def triage_runner(tmp: Path, respond=None):
    """A real WorkflowRunner whose every model alias is an instant canned FunctionModel."""
    from flotilla.agents.models.registry import ModelEndpoint, ModelRegistry
    from flotilla.agents.models.testing import FunctionModel
    from flotilla.audit.runs import RunStore
    from flotilla.audit.telemetry import Telemetry
    from flotilla.graphs import WorkflowRunner

    model = FunctionModel(respond or (lambda request: canned_reply(request.schema_name, request.json_schema)))
    aliases = ("specialist-extract", "specialist-analyze", "specialist-decide", "specialist-write")
    registry = ModelRegistry({a: ModelEndpoint() for a in aliases}, embedded=lambda: model, http_client=None)
    tmp.mkdir(parents=True, exist_ok=True)
    return WorkflowRunner(
        registry=registry,
        telemetry=Telemetry(),
        runs=RunStore(f"sqlite:///{tmp / 'runs.sqlite'}"),
        checkpoint_path=tmp / "checkpoints.sqlite",
        max_input_bytes=1_000_000,
    )


class ServedApp:
    """An ASGI app served by uvicorn on 127.0.0.1 in a background thread, lifespan on."""

    def __init__(self, app, port: int | None = None) -> None:
        import threading

        import uvicorn

        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="info", lifespan="on"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> "ServedApp":
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=15)
