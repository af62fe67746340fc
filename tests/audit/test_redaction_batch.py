"""Recorded content is redacted once per span, batched and cached, and no raw PII leaves.

The end-to-end test runs a workflow wired as `flotilla run` wires it (build_runtime: trace
file, audit store, run store and OTLP behind one sanitizing exporter) with every rail off, so
the only thing between the prompt's PII and the records is the `redacted` content policy.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from flotilla.audit.exporter import SanitizingExporter
from flotilla.audit.sanitize import Sanitizer
from flotilla.audit.setup import audit_exporters
from flotilla.audit.store import AuditStore
from flotilla.audit.telemetry import Telemetry
from flotilla.graphs import load_workflow
from flotilla.guardrails.pii import PresidioRail
from flotilla.guardrails.pii_batch import BatchRedactor, could_hold_pii
from flotilla.runtime.settings import load_settings
from flotilla.runtime.wiring import build_runtime
from tests.audit.otlp_receiver import OtlpReceiver, attrs_of
from tests.support.scripted_openai import Reply, ScriptedOpenAI
from tests.support.servers import serve_app

PII = ("Maria Gonzalez", "maria.gonzalez@example.org", "4111 1111 1111 1111")
PROMPT = f"Refund request from {PII[0]} ({PII[1]}), card {PII[2]}: please refund invoice INV-77."
RAILS_OFF = {name: {"enabled": False} for name in ("presidio", "yara", "injection_classifier", "content_safety", "tool_screen", "llama_guard", "nemo")}


@pytest.fixture(scope="module")
def batch() -> BatchRedactor:
    return BatchRedactor(PresidioRail())


def test_batched_redaction_gives_what_the_rail_gives_text_by_text(batch: BatchRedactor) -> None:
    texts = [
        "Call Maria Gonzalez or write to maria.g@example.org",
        "card 4111 1111 1111 1111, nothing else",
        json.dumps([{"role": "system", "content": "You are helpful."}, {"role": "user", "content": "John Smith lives at 10.1.2.3"}]),
        json.dumps({"total": 12.5, "names": ["Ann Lee", "ok"]}),
        "nothing to see",
        "user",
    ]
    expected = [batch.rail.redact(text)[0] for text in texts]
    assert batch.redact_many(texts) == expected
    assert batch.redact_many(texts) == expected  # the second time from the cache, the same answer
    assert "John Smith" not in expected[2] and json.loads(expected[2])[0] == {"role": "system", "content": "You are helpful."}


def test_a_card_number_written_as_a_json_number_is_redacted_in_the_record(batch: BatchRedactor) -> None:
    """The rail keeps a JSON number as is (its output flows on, where the type matters); the record need not."""
    text = json.dumps({"card": 4111111111111111, "quantity": 40, "year": 2026, "total": 2734.8, "ok": True})
    assert json.loads(batch.redact_many([text])[0]) == {"card": "<CREDIT_CARD>", "quantity": 40, "year": 2026, "total": 2734.8, "ok": True}
    assert batch.rail.redact(text)[0] == text


def test_the_leaf_cache_keeps_to_its_character_budget(batch: BatchRedactor, monkeypatch: pytest.MonkeyPatch) -> None:
    from flotilla.guardrails import pii_batch

    monkeypatch.setattr(pii_batch, "CACHE_CHARS", 300)
    texts = [f"Paragraph {i}: Maria Gonzalez wrote from maria.g@example.org about order {i}." for i in range(20)]
    expected = [batch.rail.redact(text)[0] for text in texts]
    assert batch.redact_many(texts) == expected
    assert 0 < batch._cache_chars <= 300
    assert batch._cache_chars == sum(len(raw) + len(done) for raw, done in batch._cache.items())
    assert batch.redact_many(texts) == expected  # evicted leaves are analysed again, to the same answer


def test_the_worker_process_redacts_as_this_process_does_without_spacys_cli(batch: BatchRedactor) -> None:
    from flotilla.guardrails.redaction_worker import RedactionWorker

    texts = [
        "Call Maria Gonzalez or write to maria.g@example.org, phone +44 20 7946 0958",
        json.dumps([{"role": "user", "content": f"{PROMPT} John Smith lives at 10.1.2.3, SSN 078-05-1120"}]),
        "IBAN GB82 WEST 1234 5698 7654 32 and nothing else",
    ]
    worker = RedactionWorker()
    try:
        assert worker.redact_many(texts) == batch.redact_many(texts)
        # spaCy's command line (typer, weasel, rich, …) stays out of the worker's memory.
        loaded = worker._started().submit(_loaded_modules, ("typer", "weasel", "spacy.cli.init_config", "spacy")).result()
        ner_math = worker._started().submit(_ner_matrix_products).result()
        niceness = worker._started().submit(os.nice, 0).result()
    finally:
        worker.close()
    assert niceness == min(os.nice(0) + worker.niceness, 19)  # runs go first when the cores are short
    assert loaded == {"typer": False, "weasel": False, "spacy.cli.init_config": False, "spacy": True}
    assert ner_math == (False, 1)  # NER's embedding layers on numpy's OpenBLAS (not BLIS), one thread: the same redactions as above


def _ner_matrix_products() -> tuple[bool, int]:
    """(whether the worker's NER embedding layers use BLIS, OpenBLAS threads), read in the worker."""
    from threadpoolctl import threadpool_info

    from flotilla.guardrails import redaction_worker

    ner = redaction_worker._WORKER_REDACTOR.rail._analyzer.nlp_engine.nlp["en"].get_pipe("ner")
    uses_blis = any(getattr(node.ops, "use_blis", True) for node in ner.model.get_ref("tok2vec").walk())
    return uses_blis, max(pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas")


def _loaded_modules(names: Sequence[str]) -> dict[str, bool]:
    import sys

    return {name: name in sys.modules for name in names}


def test_the_prefilter_only_skips_text_no_entity_can_match() -> None:
    for skipped in ("user", "assistant", "12.5", "", "x", "203", "-", "42%"):
        assert not could_hold_pii(skipped), skipped
    for analysed in ("Ann", "Bo Li", "a@b.co", "1.2.3.4", "020 7946 0958", "4111111111111111", "GB82WEST12345698765432"):
        assert could_hold_pii(analysed), analysed


def test_a_prompt_reads_as_its_parts_do_alone_and_costs_no_second_analysis(batch: BatchRedactor, monkeypatch: pytest.MonkeyPatch) -> None:
    """A step's prompt repeats the run's input under "INPUT:" and an earlier answer (JSON) under
    "EXTRACT RESULT:": each part is redacted as it is on its own (the input's run record, the
    answer's span attribute), and once."""
    document = "Refund request from Maria Gonzalez, maria.gonzalez@example.org.\n" + "Line item: copier paper, 40 boxes.\n" * 16
    answer = json.dumps({"contact_person": "Ann Lee", "note": "Called John Smith on 020 7946 0958", "total": 12.5})
    prompt = f"INPUT:\n{document}\n\nEXTRACT RESULT:\n{answer}"
    analysed: list[str] = []
    analyze = batch._analyze
    monkeypatch.setattr(batch, "_analyze", lambda texts: analysed.extend(texts) or analyze(texts))
    redacted_prompt = batch.redact_many([prompt])[0]
    first = len(analysed)
    alone = batch.redact_many([document, answer])
    assert len(analysed) == first  # both parts were analysed for the prompt already
    assert redacted_prompt == f"INPUT:\n{alone[0]}\n\nEXTRACT RESULT:\n{alone[1]}"
    assert alone == [batch.rail.redact(document)[0], batch.rail.redact(answer)[0]]
    for raw in ("Maria Gonzalez", "maria.gonzalez@example.org", "Ann Lee", "John Smith", "7946"):
        assert raw not in redacted_prompt, raw


def test_a_batch_is_redacted_once_and_shared_by_every_exporter(sqlite_store: AuditStore) -> None:
    seen: list[list[str]] = []

    def redact_many(texts: Sequence[str]) -> list[str]:
        seen.append(list(texts))
        return [text.replace("Maria", "<PERSON>") for text in texts]

    sanitizer = Sanitizer("redacted", redact_many=redact_many)
    memory = InMemorySpanExporter()
    (shared,) = audit_exporters(sqlite_store, sanitizer, otlp=False, also=[memory])
    assert isinstance(shared, SanitizingExporter)
    telemetry = Telemetry([shared])
    for step in range(3):
        with telemetry.tracer.start_as_current_span(f"chat step-{step}", attributes={
            "flotilla.run_id": "run-1", "gen_ai.operation.name": "chat",
            "gen_ai.input.messages": json.dumps([{"role": "user", "content": "Hello, I am Maria"}]),  # the same in every step
            "gen_ai.output.messages": f"Reply {step} to Maria",
        }):
            pass
    telemetry.shutdown()

    assert len(seen) == 1  # one batch, one call, each distinct text once
    assert sorted(seen[0]) == sorted({json.dumps([{"role": "user", "content": "Hello, I am Maria"}]), *(f"Reply {s} to Maria" for s in range(3))})
    stored = [r.payload["attributes"] for r in sqlite_store.run_records("run-1") if r.kind == "span"]
    assert len(stored) == 3 and all("Maria" not in json.dumps(a) for a in stored)
    assert all("Maria" not in json.dumps(dict(s.attributes)) for s in memory.get_finished_spans())


@pytest.fixture
def wired_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A two-step workflow on a scripted model that echoes the PII back, wired by build_runtime, OTLP on."""
    project = tmp_path / "project"
    project.mkdir()
    schema = {"type": "object", "properties": {"summary": {"type": "string"}}, "required": ["summary"]}
    agents = {}
    for step in ("read", "reply"):
        (project / f"{step}.md").write_text(f"You are the {step} step.\n")
        (project / f"{step}.schema.json").write_text(json.dumps(schema))
        agents[step] = {"role": step, "instructions": f"{step}.md", "output_schema": f"{step}.schema.json", "model": f"m-{step}"}
    workflow = {"name": "pii_probe", "agents": agents, "rails": RAILS_OFF, "edges": [{"from": "read", "to": "reply"}]}
    (project / "pii_probe.yaml").write_text(json.dumps(workflow))
    server = ScriptedOpenAI(default=lambda body: Reply(json.dumps({"summary": f"{PII[0]} at {PII[1]} asks for a refund"})))
    with serve_app(server.app()) as url, OtlpReceiver() as receiver:
        config = {"models": {f"m-{s}": {"provider": "openai-compatible", "base_url": f"{url}/v1", "model": s, "max_retries": 0}
                             for s in ("read", "reply")},
                  "data_dir": str(tmp_path / "data"), "audit_content": "redacted"}
        (project / "flotilla.yaml").write_text(json.dumps(config))
        monkeypatch.setenv("FLOTILLA_CONFIG", str(project / "flotilla.yaml"))
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        yield project, tmp_path / "data", receiver, server


async def test_no_raw_pii_from_the_prompt_reaches_the_store_the_trace_file_or_otlp(wired_project) -> None:
    project, data_dir, receiver, server = wired_project
    runtime = build_runtime(load_settings())
    try:
        async with runtime.runner:
            result = await runtime.runner.run(load_workflow(project / "pii_probe.yaml"), PROMPT)
    finally:
        runtime.close()  # drains the exporters
    assert result.status == "succeeded", result.error
    assert PII[0] in json.dumps(server.requests)  # rails off: the model did see the PII

    records = runtime.audit_store.run_records(result.run_id) if runtime.audit_store else []
    stored = json.dumps([r.payload for r in records], ensure_ascii=False)
    spans = receiver.spans()
    otlp = json.dumps([{k: str(v) for k, v in attrs_of(s).items()} for s in spans], ensure_ascii=False)
    traces = (data_dir / "traces.jsonl").read_text(encoding="utf-8")
    run = runtime.runs.get_run(result.run_id)
    run_row = json.dumps([run.input, run.output, run.steps], ensure_ascii=False)
    for where, text in {"audit store": stored, "OTLP": otlp, "trace file": traces, "run store": run_row}.items():
        for value in PII:
            assert value not in text, f"{value!r} reached the {where}"
    assert "<PERSON>" in stored and "<PERSON>" in otlp and "<EMAIL>" in traces  # content kept, redacted
    assert {r.kind for r in records} >= {"span", "run"} and runtime.audit_store.verify().ok
