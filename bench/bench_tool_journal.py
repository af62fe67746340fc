"""What "no duplicated side effects" costs per MCP tool call: the idempotency key and the journal.

    python bench/bench_tool_journal.py [--calls 200]

Against the real bundled ledger (stdio, `--writable`, its own SQLite file), in one run:
  write, journal off   ledger.record_decision, key in `_meta`, nothing journaled (the peer)
  write, journal on    the same call inside a run: "started" and "finished" committed (fsync) around it
  read, journal on     ledger.find_vendor inside a run: read-only, so never journaled
Each line prints the mean ms per call and its ratio to the first line (measured in the same run).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flotilla.mcp_servers.ledger import build_database  # noqa: E402
from flotilla.tools import StdioServerConfig, ToolCallJournal, open_hub, tool_call_scope  # noqa: E402


async def timed(hub, name: str, arguments: dict, calls: int, run: str | None) -> float:
    started = time.perf_counter()
    for index in range(calls):
        if run is None:
            await hub.call(name, arguments, call_index=index)
        else:
            with tool_call_scope(run, f"bench@{index}"):
                await hub.call(name, arguments)
    return (time.perf_counter() - started) * 1000 / calls


async def main(calls: int) -> None:
    with tempfile.TemporaryDirectory(prefix="flotilla-bench-journal-") as tmp:
        db = build_database(Path(tmp) / "ledger.sqlite")
        config = StdioServerConfig(command=sys.executable, args=["-m", "flotilla.mcp_servers.ledger", "--db", str(db), "--writable"])
        journal = ToolCallJournal(f"sqlite:///{Path(tmp) / 'runs.sqlite'}")
        async with open_hub({"ledger": config}, lock_file=Path(tmp) / "mcp.lock.json", journal=journal) as hub:
            write = {"invoice_number": "INV-BENCH", "decision": "hold"}
            await timed(hub, "ledger.record_decision", write, 10, None)  # warm: session, listing, pins
            off = await timed(hub, "ledger.record_decision", write, calls, None)
            on = await timed(hub, "ledger.record_decision", write, calls, "bench-run")
            read = await timed(hub, "ledger.find_vendor", {"name": "Northwind"}, calls, "bench-run")
        journal.close()
    print(f"tool-call journal, {calls} calls each, real ledger over stdio")
    print(f"  write, journal off   {off:7.2f} ms/call   1.00x")
    print(f"  write, journal on    {on:7.2f} ms/call   {on / off:.2f}x   (+{on - off:.2f} ms: two durable commits)")
    print(f"  read,  journal on    {read:7.2f} ms/call   {read / off:.2f}x   (read-only: not journaled)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200)
    asyncio.run(main(parser.parse_args().calls))
