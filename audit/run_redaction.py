"""Finished runs' records redacted in the background, so a run's caller never waits on NER.

Under the `redacted` policy a finished run's input, output and steps go through the PII redactor
(spaCy: tens to hundreds of ms per run). `RunStore.finish_run` writes the outcome at once
(status, end time, error — the error's quoted content already policed — and its audit record:
on disk before the run is reported finished) with the content still as given, marked `raw` as
an unfinished run's input is; this queue then replaces the content with what the policy keeps.

Nothing raw outlives it: a reader of the store (`RunStore.get_run`) redacts a finished `raw` row
before returning it, `drain()` (runtime shutdown) finishes the queue, and rows a crash left
behind are redacted by the next queue over the same store when it starts (`sweep`).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from flotilla.audit.run_content import content_strings, kept_json, kept_steps, kept_text

if TYPE_CHECKING:
    from flotilla.audit.runs import RunStore

__all__ = ["RunRedactionQueue"]

log = logging.getLogger(__name__)


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
        from flotilla.audit.runs import RAW, UNFINISHED, runs

        store = self.store
        with store.engine.connect() as conn:
            row = conn.execute(
                select(runs.c.input, runs.c.output, runs.c.steps).where(
                    runs.c.run_id == run_id, runs.c.content == RAW, runs.c.status.not_in(UNFINISHED)
                )
            ).first()
        if row is None:
            return False
        output = None if row.output is None else json.loads(row.output)
        steps = json.loads(row.steps or "[]")
        sanitizer = store.sanitizer
        sanitizer.prime(content_strings([row.input, output, steps]))  # one batch for the whole record
        kept_output = kept_json(sanitizer, output)
        values: dict[str, Any] = {
            "input": kept_text(sanitizer, row.input),
            "output": None if kept_output is None else json.dumps(kept_output),
            "steps": json.dumps(kept_steps(sanitizer, steps)),
            "content": sanitizer.policy.value,
        }
        store._group.run(
            lambda conn: conn.execute(update(runs).where(runs.c.run_id == run_id, runs.c.content == RAW).values(**values))
        )
        return True

    def sweep(self) -> int:
        """Redact every finished row left `raw` (a process that crashed before its queue drained)."""
        from flotilla.audit.runs import RAW, UNFINISHED, runs

        with self.store.engine.connect() as conn:
            ids = list(conn.execute(select(runs.c.run_id).where(runs.c.content == RAW, runs.c.status.not_in(UNFINISHED))).scalars())
        return sum(self._redact_logged(run_id) for run_id in ids)

    def _started(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="flotilla-run-redaction", daemon=True)
                self._queue.put("")  # the sweep goes first
                self._thread.start()

    def _work(self) -> None:
        while True:
            run_id = self._queue.get()
            try:
                if run_id:
                    self._redact_logged(run_id)
                else:
                    self.sweep()
            finally:
                self._queue.task_done()

    def _redact_logged(self, run_id: str) -> bool:
        try:
            return self.redact(run_id)
        except Exception:  # stays raw on disk; a read or the next sweep redacts it
            log.exception("could not redact the record of finished run %s; it is redacted when next read", run_id)
            return False
