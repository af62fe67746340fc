"""The gateway: workflows as MCP tools, driven by the official MCP Python SDK client over
streamable HTTP (bearer auth, progress, cancellation)."""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

from flotilla.audit.errors import ConfigError
from flotilla.mcp_servers.gateway import Gateway, GatewayHttp, check_bind
from tests.mcp.helpers import ServedApp, canned_reply, triage_runner

TOKEN = "gw-test-token-5f1c9e"
INVOICE = (Path(__file__).resolve().parents[2] / "graphs" / "samples" / "invoice.txt").read_text()


def _client(url: str, token: str | None) -> Client:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    return Client(streamable_http_client(url, http_client=create_mcp_http_client(headers=headers)), mode="legacy")


async def test_http_gateway_runs_a_workflow_with_progress_and_auth(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    runners = []

    def factory():
        runners.append(triage_runner(tmp_path))
        return runners[-1]

    http = GatewayHttp(Gateway(factory, workflows=["document_triage"]), token=TOKEN)
    with ServedApp(http.app("/mcp")) as served:
        url = f"{served.url}/mcp"
        async with httpx.AsyncClient() as raw:
            body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
                response = await raw.post(url, json=body, headers=headers)
                assert response.status_code == 401 and response.headers["www-authenticate"].startswith("Bearer")

        progress: list[tuple[float, float | None, str | None]] = []

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            progress.append((done, total, message))

        async with _client(url, TOKEN) as client:
            tools = (await client.list_tools()).tools
            assert [t.name for t in tools] == ["document_triage"]
            assert tools[0].input_schema["required"] == ["input"]
            assert tools[0].input_schema["properties"]["input"]["description"] == "A supplier invoice as plain text."
            result = await client.session.call_tool("document_triage", {"input": INVOICE}, progress_callback=on_progress)

    assert not result.is_error
    structured = result.structured_content
    assert structured["status"] == "succeeded" and structured["steps"] == 7
    assert structured["output"]["subject"].startswith("Invoice INV-2026-0412: ")  # the write step's note
    assert '"status": "succeeded"' in result.content[0].text or '"status":"succeeded"' in result.content[0].text
    assert [m for _, _, m in progress] == [
        f"run {structured['run_id']} started",
        "extract: ok",
        "vendor: ok",
        "purchase_order: ok",
        "prior_invoices: ok",
        "analyze: ok",
        "decide: ok",
        "write: ok",
    ]
    assert progress[-1][:2] == (7, 7)
    record = runners[0].runs.get_run(structured["run_id"])
    assert record.status == "succeeded" and record.initiator == "mcp"
    assert TOKEN not in caplog.text


async def test_cancelled_call_stops_the_run(tmp_path: Path) -> None:
    started, cancelled = asyncio.Event(), []

    async def respond(request):
        if request.schema_name == "Invoice":  # the workflow's one model step
            started.set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled.append(time.monotonic())
                raise
        return canned_reply(request.schema_name, request.json_schema)

    async with _served_triage(tmp_path, respond) as (client, runners):
        with pytest.raises(MCPError):
            # the client gives up after 3 s and sends notifications/cancelled
            await client.session.call_tool("document_triage", {"input": INVOICE}, read_timeout_seconds=3)
        # Under load the cancel may land before the slow call starts; either way the run
        # must stop, and a model call that had started must have been cancelled.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not (cancelled or (not started.is_set() and _finished(runners))):
            await asyncio.sleep(0.05)
        assert cancelled or (not started.is_set() and _finished(runners)), "the model call of the cancelled run kept running"
        # the gateway still serves after a cancellation
        assert [t.name for t in (await client.list_tools()).tools] == ["document_triage"]

    runs = runners[0].runs
    with runs.engine.connect() as conn:
        from flotilla.audit.runs import runs as table

        rows = conn.execute(table.select()).mappings().all()
    assert len(rows) == 1 and rows[0]["status"] == "cancelled" and '"cancelled"' in rows[0]["error"]


async def test_the_same_idempotency_key_never_starts_two_runs(tmp_path: Path) -> None:
    extracts: list[str] = []

    async def respond(request):
        if request.schema_name == "Invoice":
            extracts.append(request.schema_name)
            await asyncio.sleep(0.3)  # the second call arrives while the first run goes
        return canned_reply(request.schema_name, request.json_schema)

    async with _served_triage(tmp_path, respond) as (client, runners):
        tool = (await client.list_tools()).tools[0]
        assert tool.input_schema["required"] == ["input"] and "idempotency_key" in tool.input_schema["properties"]
        arguments = {"input": INVOICE, "idempotency_key": "invoice-0412-mcp"}
        first, again = await asyncio.gather(*(client.session.call_tool("document_triage", arguments) for _ in range(2)))
        later = await client.session.call_tool("document_triage", arguments)  # a retry after the run ended
        other = await client.session.call_tool("document_triage", {"input": INVOICE, "idempotency_key": "another-key"})
        bad = await client.session.call_tool("document_triage", {"input": INVOICE, "idempotency_key": ""})

    results = [first.structured_content, again.structured_content, later.structured_content]
    assert {r["run_id"] for r in results} == {first.structured_content["run_id"]}
    assert all(r["status"] == "succeeded" and r["steps"] == 7 for r in results), results
    assert other.structured_content["run_id"] != first.structured_content["run_id"]
    assert len(extracts) == 2  # one model call per key, not per tool call
    assert runners[0].runs.run_for_key("invoice-0412-mcp") == first.structured_content["run_id"]
    assert bad.is_error and "idempotency_key" in bad.content[0].text  # an empty key is refused, not ignored


@asynccontextmanager
async def _served_triage(tmp_path: Path, respond):
    """The gateway serving document_triage over HTTP (scripted model, no token): (client, runners)."""
    runners = []

    def factory():
        runners.append(triage_runner(tmp_path, respond))
        return runners[-1]

    http = GatewayHttp(Gateway(factory, workflows=["document_triage"]), token=None)
    with ServedApp(http.app("/mcp")) as served:
        async with _client(f"{served.url}/mcp", None) as client:
            yield client, runners


def _finished(runners) -> bool:
    from flotilla.audit.runs import runs as table

    if not runners:
        return False
    with runners[0].runs.engine.connect() as conn:
        return any(row["status"] != "running" for row in conn.execute(table.select()).mappings())


def test_no_token_means_loopback_only() -> None:
    check_bind("127.0.0.1", None)
    check_bind("::1", None)
    check_bind("localhost", None)
    check_bind("0.0.0.0", "a-token")
    for host in ("0.0.0.0", "192.168.1.20", "::"):
        with pytest.raises(ConfigError, match="without a bearer token"):
            check_bind(host, None)
