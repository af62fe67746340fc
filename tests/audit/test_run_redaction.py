"""Finished runs' records are redacted off the run's path (audit/run_redaction.py), and never read raw."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import update

from flotilla.audit.runs import RAW, RunStore, runs
from flotilla.audit.sanitize import Sanitizer
from flotilla.guardrails.pii import PresidioRail

INPUT = "Invoice INV-7.\nRequester: Jane Doe, jane.doe@example.com, paid with card 4111 1111 1111 1111.\n"
OUTPUT = {"body": "Sent to jane.doe@example.com.", "total": 12.5}
STEPS = [{"agent": "write", "ok": True, "output": OUTPUT}]


@pytest.fixture(scope="module")
def rail() -> PresidioRail:
    return PresidioRail()


def redacting(url: str, rail: PresidioRail) -> RunStore:
    return RunStore(url, sanitizer=Sanitizer("redacted", redact=lambda text: rail.redact(text)[0]))


def raw_pii_in(record) -> list[str]:
    text = f"{record.input} {record.output} {record.steps}"
    return [value for value in ("Jane Doe", "jane.doe@example.com", "4111 1111 1111 1111") if value in text]


def test_a_finished_run_is_redacted_in_the_background_and_kept_redacted_on_disk(tmp_path: Path, rail: PresidioRail) -> None:
    url = f"sqlite:///{tmp_path / 'runs.sqlite'}"
    store = redacting(url, rail)
    store.start_run("r1", "wf", "v1", INPUT, "cli:test")
    store.finish_run("r1", "succeeded", STEPS, output=OUTPUT)
    store.redaction.drain()
    on_disk = RunStore(url).get_run("r1")  # a bare store: no redactor of its own, reads what is stored
    assert on_disk.status == "succeeded" and on_disk.content == "redacted"
    assert raw_pii_in(on_disk) == []
    assert "<EMAIL>" in on_disk.input and on_disk.output == {"body": "Sent to <EMAIL>.", "total": 12.5}
    assert on_disk.steps[0]["output"]["body"] == "Sent to <EMAIL>." and on_disk.steps[0]["agent"] == "write"


def test_a_read_never_returns_a_finished_run_raw(tmp_path: Path, rail: PresidioRail) -> None:
    store = redacting(f"sqlite:///{tmp_path / 'runs.sqlite'}", rail)
    store.start_run("r2", "wf", "v1", INPUT, None)
    store.finish_run("r2", "succeeded", STEPS, output=OUTPUT)
    record = store.get_run("r2")  # whether or not the queue got to it yet
    assert record.content == "redacted" and raw_pii_in(record) == []


def test_rows_a_crash_left_raw_are_redacted_by_the_next_store(tmp_path: Path, rail: PresidioRail) -> None:
    url = f"sqlite:///{tmp_path / 'runs.sqlite'}"
    crashed = RunStore(url)  # a process that wrote the outcome, then died before its queue ran
    crashed.start_run("r3", "wf", "v1", INPUT, None)
    with crashed.engine.begin() as conn:
        conn.execute(update(runs).where(runs.c.run_id == "r3").values(status="succeeded", output='{"body": "Sent to jane.doe@example.com."}'))
    assert RunStore(url).get_run("r3").content == RAW
    assert redacting(url, rail).redaction.sweep() == 1
    record = RunStore(url).get_run("r3")
    assert record.content == "redacted" and raw_pii_in(record) == [] and record.output == {"body": "Sent to <EMAIL>."}


def test_unfinished_runs_keep_their_raw_input_and_full_or_off_finish_at_once(tmp_path: Path, rail: PresidioRail) -> None:
    url = f"sqlite:///{tmp_path / 'runs.sqlite'}"
    store = redacting(url, rail)
    store.start_run("r4", "wf", "v1", INPUT, None)
    assert store.redaction.sweep() == 0 and store.get_run("r4").input == INPUT  # running: resumable from its input
    off = RunStore(url, sanitizer=Sanitizer("off"))
    off.start_run("r5", "wf", "v1", INPUT, None)
    off.finish_run("r5", "failed", STEPS, output=OUTPUT)
    record = RunStore(url).get_run("r5")
    assert record.content == "off" and record.input is None and record.output is None


def test_runs_that_finish_together_are_redacted_in_one_batch(tmp_path: Path, rail: PresidioRail) -> None:
    batches: list[int] = []

    def redact_many(texts):
        batches.append(len(texts))
        return [rail.redact(text)[0] for text in texts]

    url = f"sqlite:///{tmp_path / 'runs.sqlite'}"
    store = RunStore(url, sanitizer=Sanitizer("redacted", redact_many=redact_many))
    ids = [f"r{i}" for i in range(5)]
    for run_id in ids:  # written raw, as a process that died before its queue ran leaves them
        RunStore(url).start_run(run_id, "wf", "v1", INPUT.replace("INV-7", f"INV-{run_id}"), None)
        with store.engine.begin() as conn:
            conn.execute(update(runs).where(runs.c.run_id == run_id).values(status="succeeded", output='{"body": "Sent to jane.doe@example.com."}'))
    assert store.redaction.redact_many([*ids, "r-unknown"]) == 5
    assert len(batches) == 1  # one redaction batch for the five records
    for run_id in ids:
        record = RunStore(url).get_run(run_id)
        assert record.content == "redacted" and raw_pii_in(record) == [] and record.output == {"body": "Sent to <EMAIL>."}
    assert store.redaction.redact_many(ids) == 0  # done already: nothing raw is left
