"""Research fan-out: the lead + 8 parallel sub-agents whose model calls each take 1 s (stub latency),
against the same work done sequentially (the same run with every model call serialised).

    python bench/bench_research.py [--sub-agents 8] [--latency 1.0]

Each run is plan (1 call) → N sub-agents (1 call each, through the tool loop with real MCP
tool listings from the bundled servers) → report (1 call). Printed:

- fan-out speedup: sequential wall / parallel wall of the sub-agent phase (goal >= 6.5x);
- whole run vs the physical limit, lead + one sub-agent + synthesis = 3 calls (goal <= 1.2x);
- whole-run speedup vs sequential;
- fan-out/join overhead per sub-agent: (wall − model latency on the critical path) / N,
  and the marginal cost of one more sub-agent from N vs 1 sub-agents.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flotilla.agents.models.base import ChatRequest  # noqa: E402
from flotilla.agents.models.registry import ModelEndpoint, ModelRegistry  # noqa: E402
from flotilla.agents.models.testing import FunctionModel  # noqa: E402
from flotilla.audit.runs import RunStore  # noqa: E402
from flotilla.audit.telemetry import JsonLinesSpanExporter, Telemetry  # noqa: E402
from flotilla.graphs import WorkflowRunner, load_workflow  # noqa: E402
from flotilla.graphs.spec import WorkflowSpec  # noqa: E402
from flotilla.mcp_servers.bundled import bundled_servers  # noqa: E402
from flotilla.tools import open_hub  # noqa: E402


def stub_model(n: int, latency_s: float, *, sequential: bool) -> FunctionModel:
    lock = asyncio.Lock()

    async def respond(request: ChatRequest) -> str:
        if sequential:
            async with lock:
                await asyncio.sleep(latency_s)
        else:
            await asyncio.sleep(latency_s)
        if request.schema_name == "Plan":
            subs = [{"question": f"Sub-question {i}: what does source {i} say?", "specialist": ("documents", "ledger")[i % 2]} for i in range(n)]
            return json.dumps({"sub_questions": subs})
        if request.schema_name == "Report":
            return json.dumps({"summary": "Done.", "claims": [], "gaps": [], "follow_up": []})
        return json.dumps({"final": {"answer": "An answer.", "cited_calls": []}})

    return FunctionModel(respond, name="stub-1s")


def spec_for(n: int) -> WorkflowSpec:
    spec = load_workflow("research")
    data = spec.model_dump(by_alias=True)
    data["research"].update({"max_sub_agents": n, "max_tool_calls": 0, "max_rounds": 1})
    data["rails"] = None
    out = WorkflowSpec.model_validate(data)
    out.source = spec.source
    return out


async def timed_run(tmp: Path, n: int, latency_s: float, *, sequential: bool) -> dict[str, float]:
    telemetry = Telemetry([JsonLinesSpanExporter(tmp / "traces.jsonl")])
    model = stub_model(n, latency_s, sequential=sequential)
    registry = ModelRegistry({"frontier": ModelEndpoint(), "specialist-analyze": ModelEndpoint()}, embedded=lambda: model, http_client=None)
    runner = WorkflowRunner(
        registry=registry, telemetry=telemetry, runs=RunStore(f"sqlite:///{tmp / 'runs.sqlite'}"),
        checkpoint_path=tmp / "checkpoints.sqlite", max_input_bytes=100_000,
        tools=open_hub(bundled_servers(), lock_file=tmp / "mcp.lock.json", tracer=telemetry.tracer),
    )
    spec = spec_for(n)
    try:
        await runner.tools.tools(None)  # start the MCP servers outside the timing
        marks: dict[str, float] = {}

        def on_event(event) -> None:
            if event.kind == "step":
                marks.setdefault(event.data["agent"], time.perf_counter())

        started = time.perf_counter()
        result = await runner.run(spec, "What do our sources say?", on_event=on_event)
        wall = time.perf_counter() - started
        assert result.status == "succeeded" and len(result.output["sub_agents"]) == n, result.error
        subs = [t for name, t in marks.items() if "/" in name]
        return {"wall": wall, "fanout": max(subs) - marks["planner"]}
    finally:
        await runner.aclose()
        telemetry.shutdown()


async def main(n: int, latency_s: float) -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        await timed_run(root / "warm", 1, 0.0, sequential=False)  # imports, first compile
        parallel = await timed_run(root / "par", n, latency_s, sequential=False)
        sequential = await timed_run(root / "seq", n, latency_s, sequential=True)
        one = await timed_run(root / "one", 1, latency_s, sequential=False)
    limit = 3 * latency_s
    print(f"lead + {n} sub-agents, every model call {latency_s:g} s (stub latency)")
    print(f"  parallel wall      {parallel['wall']:.2f} s   (fan-out phase {parallel['fanout']:.2f} s)")
    print(f"  sequential wall    {sequential['wall']:.2f} s   (fan-out phase {sequential['fanout']:.2f} s)")
    print(f"  1 sub-agent wall   {one['wall']:.2f} s")
    print(f"fan-out speedup (sub-agent phase, sequential/parallel): {sequential['fanout'] / parallel['fanout']:.2f}x  (goal >= 6.5x)")
    print(f"whole run vs lead + one sub-agent + synthesis ({limit:g} s): {parallel['wall'] / limit:.3f}x  (goal <= 1.2x)")
    print(f"whole-run speedup vs sequential: {sequential['wall'] / parallel['wall']:.2f}x  (limit {(n + 2) / 3:.2f}x)")
    print(f"fan-out/join overhead per sub-agent: {(parallel['wall'] - limit) / n * 1000:.1f} ms  "
          f"(marginal, {n} vs 1 sub-agents: {(parallel['wall'] - one['wall']) / (n - 1) * 1000:.1f} ms)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sub-agents", type=int, default=8)
    parser.add_argument("--latency", type=float, default=1.0)
    args = parser.parse_args()
    asyncio.run(main(args.sub_agents, args.latency))
