"""`flotilla serve`: /mcp runs workflows for the bearer token, /audit reads the trail for the
compliance token — two roles, two tokens — on one real HTTP server."""

from __future__ import annotations

import httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from flotilla.runtime.serve import create_app
from flotilla.runtime.settings import load_settings
from tests.support.servers import serve_app

RUN_TOKEN, AUDIT_TOKEN = "run-token-for-tests-1234", "audit-token-for-tests-5678"


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOTILLA_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FLOTILLA_AUDIT_TOKEN", AUDIT_TOKEN)
    monkeypatch.chdir(tmp_path)
    app = create_app(load_settings(), mcp_token=RUN_TOKEN)
    with serve_app(app, lifespan="on") as url:
        yield url


async def test_mcp_and_audit_have_separate_tokens(server: str) -> None:
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{server}/healthz")).json() == {"status": "ok"}
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
        for token in (None, AUDIT_TOKEN):
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            assert (await http.post(f"{server}/mcp", json=body, headers=headers)).status_code == 401
        refused = await http.get(f"{server}/audit/", headers={"Authorization": f"Bearer {RUN_TOKEN}"})
        assert refused.status_code in (303, 401)  # to the sign-in page, never the trail
        page = await http.get(f"{server}/audit/", headers={"Authorization": f"Bearer {AUDIT_TOKEN}"})
        assert page.status_code == 200 and "<html" in page.text.lower()

    client = Client(streamable_http_client(f"{server}/mcp", http_client=create_mcp_http_client(headers={"Authorization": f"Bearer {RUN_TOKEN}"})), mode="legacy")
    async with client:
        tools = await client.list_tools()
    assert "document_triage" in {tool.name for tool in tools.tools}
