"""The research workflow as an MCP tool on the gateway: sub-agents' finishes are progress notifications."""

from __future__ import annotations

from pathlib import Path

from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from flotilla.mcp_servers.gateway import Gateway, GatewayHttp
from tests.mcp.helpers import ServedApp

from .conftest import ResearchHarness, frontier_answers, specialist


async def test_the_gateway_runs_research_and_reports_each_sub_agent(tmp_path: Path, frontier) -> None:
    scripted, url = frontier
    scripted.requests.clear()
    scripted.default = frontier_answers()
    harness = ResearchHarness(tmp_path, specialist(), url)
    http = GatewayHttp(Gateway(lambda: harness.runner, workflows=["research"]), token=None)
    progress: list[str | None] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append(message)

    try:
        with ServedApp(http.app("/mcp")) as served:
            async with Client(streamable_http_client(f"{served.url}/mcp"), mode="legacy") as client:
                assert [t.name for t in (await client.list_tools()).tools] == ["research"]
                result = await client.session.call_tool(
                    "research", {"input": "Is Northwind active, and what does policy say about new bank details?"}, progress_callback=on_progress
                )
    finally:
        harness.telemetry.shutdown()
    assert not result.is_error, result.content
    structured = result.structured_content
    assert structured["status"] == "succeeded" and structured["steps"] == 5
    assert structured["output"]["claims"][0]["citations"] == ["q1.1"]
    finished = [m for m in progress if m and m.endswith(": ok")]
    assert progress[0].endswith("started") and finished[0] == "planner: ok" and finished[-1] == "writer: ok"
    assert sorted(finished[1:-1]) == ["documents/q1: ok", "ledger/q2: ok", "ledger/q3: ok"]
