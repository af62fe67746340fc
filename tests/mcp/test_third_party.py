"""The pool against third-party MCP servers from npm: server-filesystem (stdio) and
server-everything (streamable HTTP)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from flotilla.agents.models.base import ChatRequest
from flotilla.agents.models.testing import FunctionModel
from flotilla.agents.tool_loop import run_tool_loop
from tests.mcp.helpers import free_port, npm_bin, start_everything_http, stop
from flotilla.tools import HttpServerConfig, StdioServerConfig, ToolConnectionLost, ToolServerUnavailable, open_hub


@pytest.fixture
def everything():
    port = free_port()
    proc = start_everything_http(port)
    yield port, proc
    stop(proc)


async def test_filesystem_server_through_an_agent_tool_loop(tmp_path: Path, lock_file: Path) -> None:
    root = tmp_path / "files"
    root.mkdir()
    (root / "invoice.txt").write_text("Invoice number: INV-2026-0412\nTotal due (GBP) 2734.80\n")
    fs = StdioServerConfig(command=str(npm_bin("mcp-server-filesystem")), args=[str(root)])
    script = iter(
        [
            {"tool": "fs.list_directory", "arguments": {"path": str(root)}},
            {"tool": "fs.read_text_file", "arguments": {"path": str(root / "invoice.txt")}},
            {"tool": "fs.read_text_file", "arguments": {"path": "/etc/passwd"}},
            {"final": {"total": "2734.80"}},
        ]
    )
    model = FunctionModel(lambda request: json.dumps(next(script)))
    output = {"type": "object", "properties": {"total": {"type": "string"}}, "required": ["total"]}
    messages = [{"role": "user", "content": "What is the total of the invoice in the folder?"}]
    async with open_hub({"fs": fs}, lock_file=lock_file) as hub:
        view = hub.view(["fs.list_directory", "fs.read_text_file"])
        result = await run_tool_loop(messages, view, model, output, max_steps=5)
        with pytest.raises(Exception, match="not in this agent's"):
            await view.call("fs.write_file", {"path": str(root / "x.txt"), "content": "x"})
    listing, read, outside = result.calls
    assert "[FILE] invoice.txt" in listing.observation
    assert "INV-2026-0412" in read.observation and not read.is_error
    assert outside.is_error and "denied" in outside.observation.lower()
    assert result.output == {"total": "2734.80"}


async def test_everything_over_http_shares_a_session_and_survives_a_restart(everything, lock_file: Path, monkeypatch) -> None:
    everything_port, everything_proc = everything
    monkeypatch.setenv("EVERYTHING_TOKEN", "test-token-not-checked-by-this-server")
    config = HttpServerConfig(url=f"http://127.0.0.1:{everything_port}/mcp", bearer_token_env="EVERYTHING_TOKEN")
    async with open_hub({"everything": config}, lock_file=lock_file) as hub:
        sums = await asyncio.gather(*(hub.call("everything.get-sum", {"a": i, "b": 1}) for i in range(10)))
        assert [r.text for r in sums] == [f"The sum of {i} and 1 is {i + 1}." for i in range(10)]
        assert hub.connection("everything").generation == 1

        # The server restarts and forgets our session: the next call reopens a session; a
        # read-only call is resent, one that is not safe to repeat is refused with a typed error.
        stop(everything_proc)
        restarted = start_everything_http(everything_port)
        try:
            echo = await hub.call("everything.echo", {"message": "after restart"})
            assert echo.text == "Echo: after restart"
            assert hub.connection("everything").generation == 2
            assert not (await hub.call("everything.toggle-simulated-logging", {})).is_error

            stop(restarted)
            restarted = start_everything_http(everything_port)
            with pytest.raises(ToolConnectionLost, match="not repeated"):
                await hub.call("everything.toggle-simulated-logging", {})
            assert (await hub.call("everything.toggle-simulated-logging", {})).text.startswith("Started")
        finally:
            stop(restarted)


async def test_http_token_variable_missing_is_a_clear_error(lock_file: Path, monkeypatch) -> None:
    monkeypatch.delenv("NO_SUCH_TOKEN", raising=False)
    config = HttpServerConfig(url="http://127.0.0.1:9/mcp", bearer_token_env="NO_SUCH_TOKEN", connect_timeout_s=5)
    async with open_hub({"remote": config}, lock_file=lock_file) as hub:
        with pytest.raises(ToolServerUnavailable, match=r"\$NO_SUCH_TOKEN, which is not set"):
            await hub.call("remote.anything", {})
