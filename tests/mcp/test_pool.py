"""The pool: one session per server, shared by concurrent calls, isolated failures, reconnects."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from tests.mcp.helpers import fault_config, ledger_config
from flotilla.tools import ToolConnectionLost, ToolTimeout, open_hub


async def test_concurrent_calls_share_one_session_and_failures_stay_isolated(tmp_path: Path, lock_file: Path) -> None:
    hub = open_hub({"fault": fault_config(tmp_path, timeout_s=1.0)}, lock_file=lock_file)
    async with hub:
        pid_before = (await hub.call("fault.pid", {})).structured["result"]
        calls = [hub.call("fault.echo", {"text": f"n{i}"}) for i in range(20)]
        calls += [hub.call("fault.fail", {"reason": "sibling"}), hub.call("fault.hang", {})]
        results = await asyncio.gather(*calls, return_exceptions=True)
        echoes, failed, hung = results[:20], results[20], results[21]
        assert [r.text for r in echoes] == [f"n{i}" for i in range(20)]
        assert failed.is_error and "failed on purpose: sibling" in failed.text
        assert isinstance(hung, ToolTimeout)
        # same process, same session: nothing reconnected because of the failures
        assert (await hub.call("fault.pid", {})).structured["result"] == pid_before
        assert hub.connection("fault").generation == 1


async def test_killed_server_is_restarted_on_next_call(lock_file: Path) -> None:
    async with open_hub({"ledger": ledger_config()}, lock_file=lock_file) as hub:
        first = await hub.call("ledger.find_vendor", {"name": "northwind office"})
        assert first.structured["vendors"][0]["vendor_id"] == "V-1001"
        conn = hub.connection("ledger")
        pid = _server_pid("flotilla.mcp_servers.ledger")
        os.kill(pid, signal.SIGKILL)
        await _until(lambda: not conn.connected)
        again = await hub.call("ledger.get_purchase_order", {"po_number": "PO-7781"})
        assert again.structured["net_total"] == 2279
        assert conn.generation == 2 and _server_pid("flotilla.mcp_servers.ledger") != pid


async def test_in_flight_loss_retries_only_safe_tools(tmp_path: Path, lock_file: Path) -> None:
    async with open_hub({"fault": fault_config(tmp_path)}, lock_file=lock_file) as hub:
        pid = (await hub.call("fault.pid", {})).structured["result"]
        write = asyncio.create_task(hub.call("fault.slow_write", {"seconds": 3}))
        read = asyncio.create_task(hub.call("fault.slow_read", {"seconds": 0.5}))
        await _until(lambda: _log_lines(tmp_path).count("slow_read") == 1 and "slow_write" in _log_lines(tmp_path))
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(ToolConnectionLost, match="not repeated"):
            await write
        assert (await read).text == "read after 0.5s"  # repeated once on a fresh session
        assert _log_lines(tmp_path).count("slow_read") == 2
        assert _log_lines(tmp_path).count("slow_write") == 1


def _log_lines(tmp_path: Path) -> list[str]:
    path = tmp_path / "calls.log"
    return path.read_text().split() if path.exists() else []


def _server_pid(module: str) -> int:
    """The child process of this test process running `module` (read from /proc)."""
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == me and module.encode() in cmdline:
            return int(entry.name)
    raise LookupError(f"no child process runs {module}")


async def _until(predicate, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.02)
