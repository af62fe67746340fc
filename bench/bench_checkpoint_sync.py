"""The SQLite checkpointer's commits, fsync'd or not: a four-step LangGraph run, A/B in one process.

    python bench/bench_checkpoint_sync.py [--runs 60]

The same graph (four nodes that answer at once, the runner's state shape) on two AsyncSqliteSaver
files opened as graphs/checkpointers.py opens them, one left at SQLite's default (WAL,
synchronous=FULL: every checkpoint commit an fsync), one with synchronous=NORMAL (what flotilla
uses: a killed process loses no checkpoint; a power cut may roll back the last ones). Runs
interleaved; prints the median ms per run of each and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import operator
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any, TypedDict

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STEPS = ("extract", "analyze", "decide", "write")


class State(TypedDict, total=False):
    input: str
    outputs: dict[str, Any]
    steps: Annotated[list[dict[str, Any]], operator.add]


def graph(saver: Any) -> Any:
    from langgraph.graph import END, START, StateGraph

    builder = StateGraph(State)

    def node(name: str):
        async def run(state: State) -> dict[str, Any]:
            return {"outputs": {**state.get("outputs", {}), name: {"ok": True}}, "steps": [{"agent": name, "ok": True}]}
        return run

    previous = START
    for name in STEPS:
        builder.add_node(name, node(name))
        builder.add_edge(previous, name)
        previous = name
    builder.add_edge(previous, END)
    return builder.compile(checkpointer=saver)


async def main(runs: int) -> None:
    from flotilla.graphs.checkpointers import open_checkpointer

    tmp = Path(tempfile.mkdtemp(prefix="flotilla-bench-cp-"))
    full_cm, full = await open_checkpointer(tmp / "full.sqlite")
    await full.conn.execute("PRAGMA synchronous=FULL")  # SQLite's default: undo flotilla's setting
    normal_cm, normal = await open_checkpointer(tmp / "normal.sqlite")
    graphs = {"FULL": graph(full), "NORMAL": graph(normal)}
    text = (Path(__file__).resolve().parents[1] / "graphs" / "samples" / "invoice.txt").read_text()
    samples: dict[str, list[float]] = {name: [] for name in graphs}
    try:
        for i in range(runs + 5):
            for name, compiled in graphs.items():
                started = time.perf_counter()
                await compiled.ainvoke({"input": text, "outputs": {}, "steps": []}, {"configurable": {"thread_id": f"{name}-{i}"}})
                if i >= 5:  # the first runs warm up
                    samples[name].append(time.perf_counter() - started)
    finally:
        await full_cm.__aexit__(None, None, None)
        await normal_cm.__aexit__(None, None, None)
    full_ms, normal_ms = (statistics.median(samples[k]) * 1000 for k in ("FULL", "NORMAL"))
    print(f"four-step LangGraph run, AsyncSqliteSaver (WAL), nodes answer at once; {runs} runs each, interleaved")
    print(f"  synchronous=FULL (every commit fsync'd):  {full_ms:6.2f} ms per run")
    print(f"  synchronous=NORMAL (flotilla's):          {normal_ms:6.2f} ms per run  ({normal_ms / full_ms:.2f}x: {(full_ms - normal_ms) / len(STEPS):.2f} ms less a step)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=60)
    asyncio.run(main(parser.parse_args().runs))
