"""One chat call's client CPU: the openai SDK's `post` vs flotilla's direct post (agents/models/chat_http.py).

    python bench/bench_chat_post.py [--calls 300] [--rounds 3]

The same structured-output request (an agent step's: system + user message with the sample
invoice, a JSON Schema) to the same stub OpenAI-compatible server (bench_orchestration's, a
subprocess, answering at once), over one keep-alive connection pool:
  sdk     `AsyncOpenAI.post("/chat/completions", cast_to=ChatCompletion, body=...)`: what
          OpenAICompatibleClient sent before
  direct  `ChatEndpoint.post(body, timeout)`: the same bytes over the SDK's own httpx client,
          the reply read from its JSON
  httpx   a bare `httpx2.AsyncClient.post(json=...)` and `response.json()`: the floor (plain LangGraph's way)
Prints this process's CPU per call (medians of interleaved rounds) and the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_orchestration import INPUT, Extracted, start_stub  # noqa: E402


async def main(calls: int, rounds: int) -> None:
    import httpx2
    from openai.types.chat import ChatCompletion

    from flotilla.agents.models.chat_http import ChatEndpoint

    proc, stub = start_stub()
    base = f"{stub}/d0/v1"
    body = {
        "model": "extract", "max_tokens": 256, "temperature": 0.0,
        "messages": [{"role": "system", "content": "You are the extract step."}, {"role": "user", "content": INPUT}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "extract", "schema": Extracted.model_json_schema(), "strict": True}},
    }
    endpoint = ChatEndpoint.open(base, "unused", 60.0)
    bare = httpx2.AsyncClient(timeout=60)

    async def sdk() -> None:
        await endpoint.sdk.post("/chat/completions", cast_to=ChatCompletion, body=body, options={"timeout": 60.0})

    async def direct() -> None:
        await endpoint.post(body, 60.0)

    async def httpx() -> None:
        (await bare.post(f"{base}/chat/completions", json=body)).json()

    ways = {"sdk": sdk, "direct": direct, "httpx": httpx}
    cpu: dict[str, list[float]] = {name: [] for name in ways}
    try:
        for _ in range(rounds):
            for name, call in ways.items():
                for _ in range(20):  # warm: connections open, caches filled
                    await call()
                started = time.process_time()
                for _ in range(calls):
                    await call()
                cpu[name].append((time.process_time() - started) / calls * 1000)
    finally:
        await endpoint.close()
        await bare.aclose()
        proc.terminate()
        proc.wait()
    ms = {name: statistics.median(values) for name, values in cpu.items()}
    print(f"client CPU per chat call, {calls} calls x {rounds} interleaved rounds, stub answering at once (medians)")
    for name, value in ms.items():
        print(f"  {name:7} {value:6.3f} ms")
    print(f"direct vs sdk: {ms['direct'] / ms['sdk']:.2f}x ({ms['sdk'] - ms['direct']:.3f} ms less a call);"
          f" direct vs bare httpx: {ms['direct'] / ms['httpx']:.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.rounds))
