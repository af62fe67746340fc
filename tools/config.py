"""The `mcp_servers:` section of flotilla.yaml: one entry per MCP server an agent may use.

    mcp_servers:
      ledger:                       # stdio: flotilla starts the process
        command: python
        args: [-m, flotilla.mcp_servers.ledger]
      everything:                   # streamable HTTP: flotilla connects
        url: http://127.0.0.1:3001/mcp
        bearer_token_env: EVERYTHING_TOKEN

An entry with `command` is stdio, one with `url` is streamable HTTP; `transport:` may be
given to be explicit. Secrets never live in the file: HTTP tokens come from the named
environment variable at connect time.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

from flotilla.tools.errors import ToolServerUnavailable

__all__ = ["StdioServerConfig", "HttpServerConfig", "McpServerConfig", "SERVER_NAME_PATTERN"]

SERVER_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")
"""Server names become the prefix of `server.tool`, so they may not contain dots."""


class _ServerBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timeout_s: float = Field(default=30.0, gt=0)
    """Deadline of one tool call (the server is sent a cancellation when it passes)."""
    connect_timeout_s: float = Field(default=30.0, gt=0)
    """Deadline for starting/connecting and the MCP handshake."""
    honours_idempotency_keys: bool = False
    """The operator vouches that every tool of this server returns the first result for a repeated
    idempotency key (tools/idempotency.py), so an interrupted call may be re-sent with its key."""


class StdioServerConfig(_ServerBase):
    transport: Literal["stdio"] = "stdio"
    command: str = Field(min_length=1)
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    """Extra environment for the process (merged over a minimal safe environment: PATH, HOME, …)."""
    cwd: Path | None = None


class HttpServerConfig(_ServerBase):
    transport: Literal["http"] = "http"
    url: str
    bearer_token_env: str | None = None
    """Name of the environment variable that holds the bearer token (never the token itself)."""
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://")
        return value

    def resolved_headers(self) -> dict[str, str]:
        headers = dict(self.headers)
        if self.bearer_token_env:
            token = os.environ.get(self.bearer_token_env)
            if not token:
                raise ToolServerUnavailable(
                    f"the MCP server at {self.url} reads its bearer token from ${self.bearer_token_env}, which is not set"
                )
            headers["Authorization"] = f"Bearer {token}"
        return headers


def _transport_of(value: Any) -> str:
    if isinstance(value, BaseModel):
        return getattr(value, "transport", "stdio")
    if isinstance(value, dict):
        if "transport" in value:
            return str(value["transport"])
        return "http" if "url" in value else "stdio"
    return "stdio"


McpServerConfig = Annotated[
    Annotated[StdioServerConfig, Tag("stdio")] | Annotated[HttpServerConfig, Tag("http")],
    Discriminator(_transport_of),
]
"""One server entry: stdio (`command`) or streamable HTTP (`url`)."""
