"""Where a run's CPU goes: per thread, per side, and the floor spaCy's NER sets under `redacted`.

    python bench/bench_cpu_split.py [--runs 150] [--rounds 2]

The workflow, stub and wiring of `bench_orchestration.py` (four JSON-schema chat steps, the stub
answering at once, flotilla as `flotilla run` wires it, rails off). Each side runs in its own
process, rounds interleaved: plain LangGraph; flotilla with `audit_content: off`; flotilla with
`redacted`. For each, `--runs` runs in a row after 20 warm-up runs, then the export is flushed,
and the CPU each thread of the process used (from /proc, in 10 ms clock ticks: keep `--runs` in
the hundreds) is divided by the runs, and so is the redaction worker's (a child process). Every run's input differs in every paragraph (as in
`bench_orchestration.py`), so the redaction cache only serves what really repeats.

Last, the floor: NER alone (`en_core_web_sm`, the redactor's model, no other pipe; spaCy's own
`ner.pipe` and the redactor's `GreedyNER` decoding of the same model) over
the distinct paragraphs one run brings, as a ratio to plain LangGraph's whole CPU per run. While
every distinct paragraph goes through NER, flotilla's CPU per run under `redacted` cannot be
less than its CPU under `off` plus this. And the phone recognizer's time over the same paragraphs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_orchestration as orch  # noqa: E402

SIDES = ("plain", "off", "redacted")
WARM_RUNS = 20


def thread_cpu() -> dict[str, float]:
    """CPU seconds per thread of this process, keyed by thread name (numbered pools folded: runs_0 → runs)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
            comm = Path(f"/proc/self/task/{tid}/comm").read_text().strip()
        except OSError:
            continue  # the thread ended meanwhile
        name = re.sub(r"_\d+$|-\d+$| \(.*\)$|^Thread-\d+ \((.*)\)$", r"\1", names.get(int(tid), comm))
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def children_cpu() -> float:
    """CPU seconds of this process's children (the redaction worker; the stub is the parent's child)."""
    return orch.cpu_seconds() - time.process_time()


async def measure_side(side: str, stub: str, runs: int) -> dict[str, float]:
    """CPU ms per run, per thread (and the redaction worker), for one side in this process."""
    tmp = Path(tempfile.mkdtemp(prefix=f"cpu-split-{side}-"))
    counter = iter(range(10**9))

    def distinct() -> str:
        return orch.distinct_input(next(counter))

    if side == "plain":
        import httpx
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        async with httpx.AsyncClient(timeout=60) as client, AsyncSqliteSaver.from_conn_string(str(tmp / "cp.sqlite")) as saver:
            graph = orch.plain_graph(client, f"{stub}/d0/v1", saver)

            async def run_once() -> None:
                await graph.ainvoke({"input": distinct(), "outputs": []}, {"configurable": {"thread_id": str(next(counter))}})

            return await _timed(run_once, runs, flush=lambda: None)

    orch.write_project(tmp, stub)
    config = json.loads((tmp / "flotilla.yaml").read_text())
    (tmp / "flotilla.yaml").write_text(json.dumps({**config, "audit_content": side}))
    from flotilla.graphs import load_workflow

    runtime = orch.flotilla_runtime(tmp)
    spec = load_workflow(tmp / "workflow" / "bench_d0.yaml")

    async def run_flotilla() -> None:
        result = await runtime.runner.run(spec, distinct())
        if result.status != "succeeded":
            raise RuntimeError(f"bench run ended {result.status}: {result.error}")

    async with runtime.runner:
        return await _timed(run_flotilla, runs, flush=runtime.telemetry.flush)


async def _timed(run_once: Any, runs: int, flush: Any) -> dict[str, float]:
    for _ in range(WARM_RUNS):
        await run_once()
    flush()  # warm-up spans exported (spaCy loaded in the redaction worker) before counting
    threads, worker = thread_cpu(), children_cpu()
    for _ in range(runs):
        await run_once()
    flush()
    after, worker_after = thread_cpu(), children_cpu()
    split = {name: 1000 * (cpu - threads.get(name, 0.0)) / runs for name, cpu in after.items()}
    split = {name: ms for name, ms in split.items() if ms >= 0.05}
    if 1000 * (worker_after - worker) / runs >= 0.05:
        split["redaction worker (process)"] = 1000 * (worker_after - worker) / runs
    return split


def ner_floor_ms(runs: int) -> tuple[float, float]:
    """CPU ms per run of NER alone over the distinct paragraphs a run brings: spaCy's `ner.pipe`,
    and the same model decoded as the redactor decodes it (`GreedyNER`), entities identical."""
    import spacy

    from flotilla.guardrails.ner_greedy import GreedyNER
    from flotilla.guardrails.pii import SPACY_MODEL

    nlp = spacy.load(SPACY_MODEL)
    ner = nlp.get_pipe("ner")
    greedy = GreedyNER(ner, batch_size=256)
    paragraphs = [p for n in range(runs) for p in orch.distinct_input(n).split("\n\n")]
    list(ner.pipe((nlp.make_doc(t) for t in paragraphs[:50]), batch_size=256))  # warm
    list(greedy.pipe(nlp.make_doc(t) for t in paragraphs[:50]))
    started = time.process_time()
    list(ner.pipe((nlp.make_doc(t) for t in paragraphs), batch_size=256))
    spacy_ms = 1000 * (time.process_time() - started) / runs
    started = time.process_time()
    list(greedy.pipe(nlp.make_doc(t) for t in paragraphs))
    return spacy_ms, 1000 * (time.process_time() - started) / runs


def phone_ms(runs: int) -> float:
    """CPU ms per run of the redactor's phone recognizer alone (libphonenumber's matcher, once per
    region, sharing what does not depend on it) over the same paragraphs: the next largest part of
    the redaction worker's time."""
    from flotilla.guardrails.pii_phone import GroupedPhoneRecognizer

    recognizer = GroupedPhoneRecognizer()
    paragraphs = [p for n in range(runs) for p in orch.distinct_input(n).split("\n\n")]
    started = time.process_time()
    for text in paragraphs:
        recognizer.analyze(text, ["PHONE_NUMBER"])
    return 1000 * (time.process_time() - started) / runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=150, help="measured runs in a row per side and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--stub-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:  # one side, in a process of its own: print its split as JSON
        print(json.dumps(asyncio.run(measure_side(args.side, args.stub_url, args.runs))))
        return

    stub_proc, stub = orch.start_stub()
    splits: dict[str, list[dict[str, float]]] = {side: [] for side in SIDES}
    try:
        for _ in range(args.rounds):
            for side in SIDES:
                out = subprocess.run([sys.executable, __file__, "--side", side, "--stub-url", stub, "--runs", str(args.runs)],
                                     check=True, capture_output=True, text=True).stdout
                splits[side].append(json.loads(out.strip().splitlines()[-1]))
    finally:
        stub_proc.kill()

    def median(side: str, name: str) -> float:
        return statistics.median(split.get(name, 0.0) for split in splits[side])

    totals = {side: statistics.median(sum(split.values()) for split in splits[side]) for side in SIDES}
    print(f"CPU per run, ms (median of {args.rounds} rounds of {args.runs} runs; 4-step workflow, instant stub, rails off)")
    for side in SIDES:
        label = "plain LangGraph" if side == "plain" else f"flotilla, audit_content: {side}"
        print(f"  {label:34} {totals[side]:6.2f} ms  ({totals[side] / totals['plain']:.2f}x plain LangGraph)")
        names = sorted({name for split in splits[side] for name in split}, key=lambda n: -median(side, n))
        for name in names:
            print(f"      {name:38} {median(side, name):6.2f}")
    spacy_ner, floor = ner_floor_ms(args.runs)
    print(f"  NER alone over one run's distinct paragraphs: spaCy's ner.pipe {spacy_ner:.2f} ms, as the redactor decodes it (GreedyNER)"
          f" {floor:.2f} ms ({floor / spacy_ner:.2f}x; {floor / totals['plain']:.2f}x plain LangGraph's whole run);"
          f" with it, flotilla under `redacted` is at least {(totals['off'] + floor) / totals['plain']:.2f}x plain (goal 2x)")
    print(f"  the phone recognizer alone over the same paragraphs: {phone_ms(args.runs):.2f} ms")


if __name__ == "__main__":
    main()
