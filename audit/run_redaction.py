"""Finished runs' records redacted in the background, so a run's caller never waits on NER.

Under the `redacted` policy a finished run's input, output and steps go through the PII redactor
(spaCy: tens to hundreds of ms per run). `RunStore.finish_run` writes the outcome at once
(status, end time, error — the error's quoted content already policed — and its audit record:
on disk before the run is reported finished) with the content still as given, marked `raw` as
an unfinished run's input is; this queue then replaces the content with what the policy keeps.

Nothing raw outlives it: a reader of the store (`RunStore.get_run`) redacts a finished `raw` row
before returning it, `drain()` (runtime shutdown) finishes the queue, and rows a crash left
behind are redacted by the next queue over the same store when it starts (`sweep`). Runs that
finish while the queue is busy are redacted together: with 100 runs in flight, one read, one
redaction batch and one commit serve the lot, not each run.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, select, update

from flotilla.audit.run_content import content_strings, kept_json, kept_steps, kept_text

if TYPE_CHECKING:
    from flotilla.audit.runs import RunStore

__all__ = ["RunRedactionQueue"]

log = logging.getLogger(__name__)

BATCH = 64
"""The most finished runs redacted together (under load, one read, one redaction and one commit for them all)."""


class RunRedactionQueue:
    """One daemon thread per run store, started on the first finished run it is given."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self._queue: queue.Queue[str] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, run_id: str) -> None:
        self._started()
        self._queue.put(run_id)

    def drain(self) -> None:
        """Return once every run submitted so far is redacted (or failed to be, logged: it stays
        `raw` and the next sweep or read redacts it)."""
        if self._thread is not None:
            self._queue.join()

    def redact(self, run_id: str) -> bool:
        """Replace a finished `raw` row's content with what the policy keeps; False when there was
        none (already done, unfinished, or gone). Safe to race: the update only takes a raw row."""
        return self.redact_many([run_id]) == 1

    def redact_many(self, run_ids: Sequence[str]) -> int:
        """`redact` for several runs at once: one read, one redaction batch, one commit; how many
        rows it redacted."""
        from flotilla.audit.runs import RAW, UNFINISHED, runs

        store = self.store
        with store.engine.connect() as conn:
            rows = conn.execute(
                select(runs.c.run_id, runs.c.input, runs.c.output, runs.c.steps).where(
                    runs.c.run_id.in_(list(run_ids)), runs.c.content == RAW, runs.c.status.not_in(UNFINISHED)
                )
            ).all()
        if not rows:
            return 0
        records = [(row.run_id, row.input, None if row.output is None else json.loads(row.output), json.loads(row.steps or "[]"))
                   for row in rows]
        sanitizer = store.sanitizer
        sanitizer.prime(content_strings([content for _, *record in records for content in record]))  # one batch for them all
        values = []
        for run_id, raw_input, output, steps in records:
            kept_output = kept_json(sanitizer, output)
            values.append({
                "b_run_id": run_id,
                "input": kept_text(sanitizer, raw_input),
                "output": None if kept_output is None else json.dumps(kept_output),
                "steps": json.dumps(kept_steps(sanitizer, steps)),
                "content": sanitizer.policy.value,
            })
        statement = update(runs).where(runs.c.run_id == bindparam("b_run_id"), runs.c.content == RAW)
        store._group.run(lambda conn: conn.execute(statement, values))
        return len(values)

    def sweep(self) -> int:
        """Redact every finished row left `raw` (a process that crashed before its queue drained)."""
        from flotilla.audit.runs import RAW, UNFINISHED, runs

        with self.store.engine.connect() as conn:
            ids = list(conn.execute(select(runs.c.run_id).where(runs.c.content == RAW, runs.c.status.not_in(UNFINISHED))).scalars())
        return sum(self._redact_logged(ids[i:i + BATCH]) for i in range(0, len(ids), BATCH))

    def _started(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="flotilla-run-redaction", daemon=True)
                self._queue.put("")  # the sweep goes first
                self._thread.start()

    def _work(self) -> None:
        while True:
            run_ids = [self._queue.get()]
            while len(run_ids) < BATCH:  # the runs that finished meanwhile: one read, one batch, one commit
                try:
                    run_ids.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                if "" in run_ids:
                    self.sweep()
                self._redact_logged([run_id for run_id in run_ids if run_id])
            finally:
                for _ in run_ids:
                    self._queue.task_done()

    def _redact_logged(self, run_ids: Sequence[str]) -> int:
        if not run_ids:
            return 0
        try:
            return self.redact_many(run_ids)
        except Exception:  # stays raw on disk; a read or the next sweep redacts it
            if len(run_ids) > 1:  # one bad row does not keep the others raw
                return sum(self._redact_logged([run_id]) for run_id in run_ids)
            log.exception("could not redact the record of finished run %s; it is redacted when next read", run_ids[0])
            return 0
