"""`flotilla mcp` as a real process, driven by the official MCP Python SDK (stdio) and the MCP
Inspector CLI (stdio and HTTP). The agents' models are an OpenAI-compatible endpoint that
answers instantly with canned, schema-valid JSON: these tests are about the MCP plumbing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from tests.mcp.helpers import REPO, canned_reply, free_port, npm_bin, stop, wait_for_port
from tests.support.scripted_openai import Reply, ScriptedOpenAI, schema_name
from tests.support.servers import serve_app

INVOICE = (REPO / "graphs" / "samples" / "invoice.txt").read_text()
FLOTILLA = str(Path(sys.executable).with_name("flotilla"))
ALIASES = ("SPECIALIST_EXTRACT", "SPECIALIST_ANALYZE", "SPECIALIST_DECIDE", "SPECIALIST_WRITE")


@pytest.fixture(scope="module")
def model_url():
    def answer(body: dict) -> Reply:
        schema = body["response_format"]["json_schema"]["schema"]
        return Reply(canned_reply(schema_name(body), schema))

    with serve_app(ScriptedOpenAI(default=answer).app()) as url:
        yield f"{url}/v1"


@pytest.fixture
def gateway_env(tmp_path: Path, model_url: str) -> dict[str, str]:
    env = {"FLOTILLA_DATA_DIR": str(tmp_path / "data"), "HF_HUB_OFFLINE": "1", "PATH": os.environ["PATH"]}
    for alias in ALIASES:
        env[f"FLOTILLA_MODELS__{alias}__PROVIDER"] = "openai-compatible"
        env[f"FLOTILLA_MODELS__{alias}__BASE_URL"] = model_url
        env[f"FLOTILLA_MODELS__{alias}__MODEL"] = "canned"
    return env


async def test_sdk_client_over_stdio(tmp_path: Path, gateway_env: dict[str, str]) -> None:
    params = StdioServerParameters(command=FLOTILLA, args=["mcp", "-w", "document_triage"], env=gateway_env, cwd=tmp_path)
    progress = []

    async def on_progress(done, total, message):
        progress.append(message)

    async with Client(params) as client:
        tools = (await client.list_tools()).tools
        assert [t.name for t in tools] == ["document_triage"]
        result = await client.session.call_tool("document_triage", {"input": INVOICE}, progress_callback=on_progress)
        assert not result.is_error, result.content
        assert result.structured_content["status"] == "succeeded"
        assert json.loads(result.content[0].text)["run_id"] == result.structured_content["run_id"]
        bad = await client.session.call_tool("document_triage", {"input": "   "})
        assert bad.is_error and "input is empty" in bad.content[0].text
    assert progress[1:] == [f"{step}: ok" for step in ("extract", "vendor", "purchase_order", "prior_invoices", "analyze", "decide", "write")]


def _inspector(*args: str, env: dict[str, str] | None = None) -> dict:
    done = subprocess.run(
        [str(npm_bin("mcp-inspector")), "--cli", *args], capture_output=True, text=True, timeout=180, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_inspector_cli_over_stdio(tmp_path: Path, gateway_env: dict[str, str]) -> None:
    env_args = [arg for key, value in gateway_env.items() for arg in ("-e", f"{key}={value}")]
    listed = _inspector(*env_args, FLOTILLA, "mcp", "-w", "document_triage", "--method", "tools/list", env={**os.environ})
    assert [t["name"] for t in listed["tools"]] == ["document_triage"]
    called = _inspector(
        *env_args, FLOTILLA, "mcp", "-w", "document_triage",
        "--method", "tools/call", "--tool-name", "document_triage", "--tool-arg", f"input={INVOICE}",
        env={**os.environ},
    )
    assert called.get("isError") in (None, False)
    assert called["structuredContent"]["status"] == "succeeded"


def test_inspector_cli_over_http(tmp_path: Path, gateway_env: dict[str, str]) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [FLOTILLA, "mcp", "--http", "--port", str(port), "-w", "document_triage"],
        env={**gateway_env, "FLOTILLA_MCP_TOKEN": ""},
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        wait_for_port(port)
        url = f"http://127.0.0.1:{port}/mcp"
        listed = _inspector(url, "--transport", "http", "--method", "tools/list")
        assert listed["tools"][0]["inputSchema"]["required"] == ["input"]
        called = _inspector(
            url, "--transport", "http", "--method", "tools/call", "--tool-name", "document_triage", "--tool-arg", f"input={INVOICE}"
        )
        assert called["structuredContent"]["output"]["subject"] == "Invoice INV-2026-0412: approved"  # written by the write step from the decision
    finally:
        stop(proc)
