"""The span write-ahead log: a process killed with spans still queued for export loses none of
them, and replaying a log never duplicates an audit record."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from flotilla.audit import semconv as sc
from flotilla.audit.exporter import AuditSpanExporter
from flotilla.audit.sanitize import Sanitizer
from flotilla.audit.setup import audit_exporters
from flotilla.audit.span_wal import SpanWriteAheadLog, recover, span_from_json, span_to_json
from flotilla.audit.store import AuditStore
from flotilla.audit.telemetry import Telemetry

from .conftest import HMAC_KEY

RUNS, STEPS = 5, 4

KILLED_WORKER = textwrap.dedent("""
    import json, os, signal, sys
    from flotilla.audit import semconv as sc
    from flotilla.audit.sanitize import Sanitizer
    from flotilla.audit.setup import audit_exporters
    from flotilla.audit.store import AuditStore
    from flotilla.audit.telemetry import Telemetry

    store = AuditStore(sys.argv[1], hmac_key=sys.argv[3])
    tel = Telemetry(audit_exporters(store, Sanitizer("redacted", redact_many=lambda ts: [t.replace("Maria", "<PERSON>") for t in ts]), otlp=False),
                    write_ahead=__import__("pathlib").Path(sys.argv[2]))
    for run in range({runs}):
        with tel.tracer.start_as_current_span("invoke_workflow probe", attributes={{sc.RUN_ID: f"run-{{run}}", sc.OPERATION: "invoke_workflow"}}):
            for step in range({steps}):
                with tel.tracer.start_as_current_span(f"chat step-{{step}}", attributes={{
                    sc.OPERATION: "chat", "gen_ai.input.messages": json.dumps([{{"role": "user", "content": f"Maria, run {{run}} step {{step}}"}}]),
                }}):
                    pass
    os.kill(os.getpid(), signal.SIGKILL)  # every span is still in the exporter's queue (it exports every 60 s)
""").format(runs=RUNS, steps=STEPS)


def test_spans_of_a_killed_process_reach_the_store_once(tmp_path: Path) -> None:
    url, logs = f"sqlite:///{tmp_path / 'audit.sqlite'}", tmp_path / "span-wal"
    AuditStore(url, hmac_key=HMAC_KEY).close()  # migrate before the worker
    env = {**os.environ, "OTEL_BSP_SCHEDULE_DELAY": "60000"}
    proc = subprocess.run([sys.executable, "-c", KILLED_WORKER, url, str(logs), HMAC_KEY.decode()], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    store = AuditStore(url, hmac_key=HMAC_KEY)
    try:
        assert store.count() == 0  # the killed process exported nothing
        telemetry = Telemetry(audit_exporters(store, Sanitizer("redacted", redact_many=lambda ts: [t.replace("Maria", "<PERSON>") for t in ts]), otlp=False),
                              write_ahead=logs)
        telemetry.shutdown()  # waits for the recovery of the dead process's log
        for run in range(RUNS):
            spans = [r for r in store.run_records(f"run-{run}") if r.kind == "span"]
            assert sorted(r.payload["name"] for r in spans) == sorted(["invoke_workflow probe", *(f"chat step-{s}" for s in range(STEPS))])
            assert all("Maria" not in json.dumps(r.payload) for r in spans)  # recovered spans are redacted like any other
        assert store.count() == RUNS * (STEPS + 1)
        assert store.verify().ok
        assert list(logs.glob("*/*")) == []  # both logs are gone: the dead one replayed, ours drained

        again = Telemetry(audit_exporters(store, Sanitizer("off"), otlp=False), write_ahead=logs)
        again.shutdown()
        assert store.count() == RUNS * (STEPS + 1)  # nothing left to replay
    finally:
        store.close()


class Collect(SpanExporter):
    def __init__(self) -> None:
        self.spans = []

    def export(self, spans):
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


def finished_spans(n: int, run_id: str = "run-x") -> list:
    collected = Collect()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(collected))
    for i in range(n):
        with provider.get_tracer("t").start_as_current_span(f"step {i}", attributes={sc.RUN_ID: run_id, "tags": ("a", "b")}) as span:
            span.add_event("retry", {"attempt": i})
    return collected.spans


def test_a_span_survives_its_round_trip_through_the_log() -> None:
    span = finished_spans(1)[0]
    back = span_from_json(json.loads(json.dumps(span_to_json(span))))
    assert (back.name, back.context.span_id, back.context.trace_id, back.start_time, back.end_time) == (
        span.name, span.context.span_id, span.context.trace_id, span.start_time, span.end_time)
    assert dict(back.attributes) == dict(span.attributes)
    assert [(e.name, dict(e.attributes)) for e in back.events] == [("retry", {"attempt": 0})]


def test_a_process_dying_between_export_and_acknowledgement_duplicates_nothing(sqlite_store: AuditStore, tmp_path: Path) -> None:
    spans = finished_spans(6)
    wal = SpanWriteAheadLog(tmp_path / "wal", segment_spans=4)  # two segments
    for span in spans:
        wal.append(span)
    exporter = AuditSpanExporter(sqlite_store, Sanitizer("off"))
    exporter.export(spans[:2])
    wal.acknowledge(spans[:2])
    exporter.export(spans[2:4])  # exported, then "killed" before the acknowledgement
    os.close(wal._lock_fd)  # what the kernel does when the process dies

    replayed = []
    assert recover(tmp_path / "wal", lambda batch: replayed.extend(batch) or exporter.replay(batch) is SpanExportResult.SUCCESS) == 4
    assert [s.name for s in replayed] == ["step 2", "step 3", "step 4", "step 5"]
    assert sorted(r.payload["name"] for r in sqlite_store.run_records("run-x")) == [f"step {i}" for i in range(6)]
    assert sqlite_store.verify().ok
    assert not (tmp_path / "wal").exists() or list((tmp_path / "wal").iterdir()) == []


def test_a_living_process_keeps_its_log_and_acknowledged_segments_go(tmp_path: Path) -> None:
    spans = finished_spans(5)
    wal = SpanWriteAheadLog(tmp_path / "wal", segment_spans=2)
    for span in spans:
        wal.append(span)
    assert len(list(wal.dir.glob("*.jsonl"))) == 3
    wal.acknowledge(spans[:3])  # segment 1-2 done; 3-4 holds an unexported span
    assert sorted(p.name for p in wal.dir.glob("*.jsonl")) == ["3.jsonl", "5.jsonl"]
    assert recover(tmp_path / "wal", lambda batch: True) == 0  # its owner lives: not touched
    wal.acknowledge(spans[3:])
    wal.close()
    assert not wal.dir.exists()


def test_a_log_whose_replay_fails_is_kept_for_the_next_process(tmp_path: Path) -> None:
    spans = finished_spans(3)
    wal = SpanWriteAheadLog(tmp_path / "wal")
    for span in spans:
        wal.append(span)
    os.close(wal._lock_fd)
    assert recover(tmp_path / "wal", lambda batch: False) == 0  # e.g. the store is down
    assert recover(tmp_path / "wal", lambda batch: True) == 3
    assert list((tmp_path / "wal").iterdir()) == []
