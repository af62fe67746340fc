"""`flotilla tools …`: list the configured MCP servers' tools with their pin state; approve changes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from flotilla.audit.errors import FlotillaError

if TYPE_CHECKING:  # the hub pulls in the MCP SDK: imported when a command runs, not at --help
    from flotilla.tools import ToolHub

__all__ = ["tools_app"]

tools_app = typer.Typer(name="tools", help="MCP tools: list them and their pins, approve changed tools.", no_args_is_help=True)

_STATE_STYLE = {"pinned": "green", "changed": "bold red", "new": "yellow"}


def _hub() -> ToolHub:
    from flotilla.runtime.settings import load_settings
    from flotilla.tools import open_hub

    settings = load_settings()
    return open_hub(settings.mcp_servers, config_file=settings.config_file)


def _fail(message: str) -> typer.Exit:
    Console(stderr=True).print(f"[red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(2)


@tools_app.command("list")
def list_tools(
    server: Annotated[str | None, typer.Argument(help="Only this server.")] = None,
) -> None:
    """Show every configured server, its tools and their pin state (pinned / changed / new)."""
    import asyncio

    from flotilla.tools.errors import ToolError

    async def collect(hub: ToolHub) -> tuple[list, list[tuple[str, str]]]:
        rows, failures = [], []
        for name in hub.server_names:
            if server and name != server:
                continue
            try:
                rows.extend((await hub.server_tools(name)).values())
            except ToolError as exc:
                failures.append((name, exc.message))
        return rows, failures

    async def main() -> tuple[list, list[tuple[str, str]], str]:
        hub = _hub()
        async with hub:
            if server and server not in hub.server_names:
                raise ToolError(f"no MCP server named {server!r} in flotilla.yaml (configured: {', '.join(hub.server_names) or 'none'})")
            rows, failures = await collect(hub)
            return rows, failures, str(hub.pins.path)

    try:
        rows, failures, lock_path = asyncio.run(main())
    except FlotillaError as exc:
        raise _fail(exc.message) from None
    console = Console()
    if not rows and not failures:
        console.print("No MCP servers configured (add them under `mcp_servers:` in flotilla.yaml).")
        return
    table = Table(title=f"MCP tools (pins: {lock_path})")
    table.add_column("tool", style="bold", no_wrap=True)
    table.add_column("pin")
    table.add_column("hints", no_wrap=True)
    table.add_column("description", overflow="fold", max_width=70)
    for info in sorted(rows, key=lambda i: i.name):
        hints = info.tool.annotations
        flags = [flag for flag, on in (("read-only", hints and hints.read_only_hint), ("idempotent", hints and hints.idempotent_hint)) if on]
        table.add_row(info.name, f"[{_STATE_STYLE[info.pin.value]}]{info.pin.value}[/]", ", ".join(flags), " ".join(info.description.split())[:120])
    for name, message in failures:
        table.add_row(f"{name}.*", "[red]unreachable[/]", "", message)
    console.print(table)
    blocked = [i.name for i in rows if i.blocked]
    if blocked:
        console.print(f"[bold red]{len(blocked)} blocked[/] until approved: flotilla tools approve {blocked[0]}")
    if failures:
        raise typer.Exit(1)


@tools_app.command("approve")
def approve(
    target: Annotated[str, typer.Argument(help="SERVER (all its tools) or SERVER.TOOL.")],
) -> None:
    """Re-pin a server's current tool descriptions and schemas after reviewing a change."""
    import asyncio

    server, _, tool = target.partition(".")

    async def main() -> list[str]:
        async with _hub() as hub:
            return await hub.approve(server, tool or None)

    try:
        approved = asyncio.run(main())
    except FlotillaError as exc:
        raise _fail(exc.message) from None
    _record_approval(target, approved)
    Console().print(f"[green]approved[/] {len(approved)} tool(s) of {server}: {', '.join(approved)}")


def _record_approval(target: str, approved: list[str]) -> None:
    """A re-approval changes what agents may call: it goes into the audit chain, with who did it."""
    import getpass

    from flotilla.audit.setup import open_audit_store
    from flotilla.runtime.settings import load_settings

    settings = load_settings()
    key = settings.audit_hmac_key.get_secret_value() if settings.audit_hmac_key else None
    store = open_audit_store(settings.audit_store_url, hmac_key=key)
    try:
        store.record("config", {"change": "tool_reapproval", "target": target, "tools": approved, "by": f"cli:{getpass.getuser()}"})
    finally:
        store.engine.dispose()
