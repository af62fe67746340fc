"""Audit trail numbers: ingest spans/s (SQLite, Postgres), tracing+audit overhead per agent step, verify time.

    python bench/bench_audit.py [--spans 50000] [--steps 20000] [--verify-records 1000000]

Goals (issue 5): ingest >= 5,000 spans/s on SQLite; overhead <= 0.2 ms per agent step;
verify time for 1M records. Each line prints the measured value and its ratio to the goal.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult  # noqa: E402
from opentelemetry.trace import NoOpTracer, Tracer  # noqa: E402

from flotilla.audit import semconv as sc  # noqa: E402
from flotilla.audit.exporter import AuditSpanExporter  # noqa: E402
from flotilla.audit.sanitize import Sanitizer  # noqa: E402
from flotilla.audit.setup import audit_exporters  # noqa: E402
from flotilla.audit.store import AuditStore, NewRecord  # noqa: E402
from flotilla.audit.telemetry import Telemetry  # noqa: E402

INGEST_GOAL = 5_000.0  # spans/s on SQLite
OVERHEAD_GOAL_MS = 0.2  # per agent step
BATCH = 512  # BatchSpanProcessor's default max_export_batch_size


class _Collect(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans):  # type: ignore[no-untyped-def]
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


def agent_step(tracer: Tracer, run_id: str, i: int) -> dict:
    """An instant stub agent step, traced the way the runner traces one: agent span + chat span + a rail event."""
    with tracer.start_as_current_span(f"invoke_agent step{i % 4}", attributes={sc.OPERATION: "invoke_agent", "gen_ai.agent.name": f"step{i % 4}", sc.RUN_ID: run_id}) as step:
        with tracer.start_as_current_span("chat smollm2-135m", attributes={sc.OPERATION: "chat", "gen_ai.request.model": "smollm2-135m"}) as chat:
            chat.set_attributes({"gen_ai.response.model": "smollm2-135m", "gen_ai.usage.input_tokens": 120, "gen_ai.usage.output_tokens": 40,
                                 "gen_ai.input.messages": '[{"role":"user","content":"an invoice"}]'})
        sc.rail_event(step, engine="presidio", rule="pii", point="agent-output", allowed=True, latency_ms=1.0)
    return {"ok": True}


def make_spans(n: int) -> list[ReadableSpan]:
    sink = _Collect()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(sink))
    tracer = provider.get_tracer("bench")
    i = 0
    while len(sink.spans) < n:
        agent_step(tracer, f"run-{i // 8}", i)
        i += 1
    return sink.spans[:n]


def bench_ingest(url: str, spans: list[ReadableSpan]) -> tuple[float, float]:
    """Spans/s through the exporter (sanitize, chain, insert; one transaction per 512-span batch).

    Returns (wall-clock rate, rate per CPU-second of this process). The machine is shared, so the
    CPU-time rate is the steadier figure; for Postgres the server's own CPU is not in it.
    """
    store = AuditStore(url, hmac_key=b"bench-key")
    exporter = AuditSpanExporter(store, Sanitizer("redacted", redact=lambda s: s))
    wall, cpu = time.perf_counter(), time.process_time()
    for k in range(0, len(spans), BATCH):
        exporter.export(spans[k : k + BATCH])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert store.verify().ok
    store.close()
    return len(spans) / wall, len(spans) / cpu


def bench_overhead(url: str, steps: int) -> dict[str, float]:
    """ms per instant stub step: tracing off, SDK tracing alone, tracing + audit (hot path and all-in)."""
    # Chunks of 200 steps (400 spans) stay under the processor's 512-span export trigger, so the
    # timed loop measures what the step itself pays; the flush between chunks (the background
    # export: sanitize, hash, insert) is timed separately and reported as the all-in cost.
    chunk = 200

    def timed(tracer: Tracer, flush=None) -> tuple[float, float]:  # type: ignore[no-untyped-def]
        hot = background = 0.0
        for start in range(0, steps, chunk):
            # CPU time of this thread: what the step pays, unaffected by other load on the machine
            t0 = time.thread_time()
            for i in range(start, min(start + chunk, steps)):
                agent_step(tracer, f"run-{i // 8}", i)
            t1 = time.thread_time()
            p1 = time.process_time()
            if flush is not None:
                flush()
            hot += t1 - t0
            background += time.process_time() - p1
        return hot / steps * 1e3, background / steps * 1e3

    off, _ = timed(NoOpTracer())
    bare = Telemetry(())
    sdk, _ = timed(bare.tracer)
    bare.shutdown()
    store = AuditStore(url, hmac_key=b"bench-key")
    telemetry = Telemetry(audit_exporters(store, Sanitizer("redacted", redact=lambda s: s), otlp=False))
    hot, background = timed(telemetry.tracer, telemetry.flush)
    telemetry.shutdown()
    recorded = store.count()
    store.close()
    return {"off": off, "sdk": sdk, "hot": hot, "background": background, "records": recorded}


def bench_verify(url: str, n: int) -> tuple[float, float, float]:
    """Fill a store with n span-sized records, then time one full verify (wall and CPU)."""
    store = AuditStore(url, hmac_key=b"bench-key")
    payload = {"name": "chat smollm2-135m", "attributes": {sc.OPERATION: "chat", "gen_ai.usage.input_tokens": 120, "gen_ai.request.model": "smollm2-135m"},
               "start": 1_763_800_000_000_000_000, "end": 1_763_800_000_180_000_000, "trace_id": "0" * 32, "span_id": "0" * 16, "events": []}
    t0 = time.perf_counter()
    for k in range(0, n, 10_000):
        store.append([NewRecord("span", payload, None) for _ in range(min(10_000, n - k))])
    t_fill = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    report = store.verify()
    t_verify, c_verify = time.perf_counter() - t0, time.process_time() - c0
    assert report.ok and report.checked == n, report
    store.close()
    return t_fill, t_verify, c_verify


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=50_000)
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--verify-records", type=int, default=1_000_000)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tmp = Path(tempfile.mkdtemp(prefix="flotilla-bench-audit-"))
    load = os.getloadavg()[0]
    print(f"audit bench: {os.cpu_count()} CPUs, load average {load:.1f}; SQLite WAL synchronous=FULL, Postgres 15 with default fsync")

    spans = make_spans(args.spans)
    rate, cpu_rate = bench_ingest(f"sqlite:///{tmp / 'ingest.sqlite'}", spans)
    print(f"ingest  sqlite    {rate:10,.0f} spans/s wall ({rate / INGEST_GOAL:4.2f}x the 5,000/s goal); "
          f"{cpu_rate:,.0f} spans per CPU-second ({cpu_rate / INGEST_GOAL:4.2f}x)   ({len(spans):,} spans, batches of {BATCH})")

    pg = None
    if not args.no_postgres:
        from tests.audit.pg import PostgresUnavailable, new_database, throwaway_postgres

        try:
            pg = throwaway_postgres(durable=True)
            server = pg.__enter__()
        except PostgresUnavailable as exc:
            print(f"ingest  postgres  skipped: {exc}")
            pg = None
    try:
        if pg is not None:
            rate, cpu_rate = bench_ingest(new_database(server), spans)
            print(f"ingest  postgres  {rate:10,.0f} spans/s wall ({rate / INGEST_GOAL:4.2f}x the 5,000/s goal); "
                  f"{cpu_rate:,.0f} spans per client CPU-second   (same spans, localhost TCP, fsync on)")

        o = bench_overhead(f"sqlite:///{tmp / 'overhead.sqlite'}", args.steps)
        extra = o["hot"] - o["off"]
        print(f"overhead per agent step (hot path, thread CPU time): off {o['off']:.4f} ms, SDK tracing only {o['sdk']:.4f} ms, "
              f"tracing+audit {o['hot']:.4f} ms -> +{extra:.4f} ms   {extra / OVERHEAD_GOAL_MS:4.2f}x the 0.2 ms budget")
        print(f"  background export per step (batched, off the hot path): {o['background']:.4f} ms CPU; "
              f"all-in +{extra + o['background']:.4f} ms   ({args.steps:,} steps, {o['records']:,.0f} records)")

        n = args.verify_records
        t_fill, t_verify, c_verify = bench_verify(f"sqlite:///{tmp / 'verify.sqlite'}", n)
        print(f"verify  sqlite    {n:,} records in {t_verify:.2f} s wall, {c_verify:.2f} s CPU ({n / t_verify:,.0f} records/s); "
              f"filled in {t_fill:.1f} s ({n / t_fill:,.0f} records/s)")
        if pg is not None:
            pn = min(n, 200_000)
            t_fill, t_verify, c_verify = bench_verify(new_database(server), pn)
            note = "" if pn == n else f"; 1M extrapolated linearly: {t_verify * n / pn:.1f} s"
            print(f"verify  postgres  {pn:,} records in {t_verify:.2f} s wall, {c_verify:.2f} s client CPU ({pn / t_verify:,.0f} records/s{note})")
    finally:
        if pg is not None:
            pg.__exit__(None, None, None)


if __name__ == "__main__":
    main()
