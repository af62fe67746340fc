"""A run's lifecycle records in the audit chain, appended after the run store's own commits.

The runs row and the chain live in two databases, and each commit is an fsync (2–17 ms on this
machine's shared disk). A run's start waited for two of them in a row before its first step:
its row, then its `started` record. Now:

- `later(...)`: the record is appended in the background, after the row. Used for a run's start:
  its row is on disk already, and a record the chain misses is recoverable from the row (a kill
  in between: graphs/record_repair.py appends it, marked repaired), as before.
- `now(...)`: appended in the caller's thread, after the row: both are on disk on return. Used
  where the caller needs the record in the chain at once (a wait for approval, a recovery).

A run's finish in the runner uses `later` too: its row is on disk before the run is reported
finished, its record follows (as `started`'s does, repairable from the row). Reads of the audit
store in this process wait for the records still in flight (`AuditStore.settle_before_reads`),
so whoever reads the chain here after a run returns finds its `finished` record.

Background records go through one writer thread, in arrival order (so a run's records keep
their order in the chain), as many as are queued in one append: under load one transaction, one
head update and one summary pass serve a whole batch of runs, not each record. The writer lingers
a moment (`LINGER_S`) before each append so that the next runs' records join it, in sequence as in
a burst: appended at once, each record was a transaction and an fsync of its own (the writer's CPU
1.7 → 0.5 ms a run, `python bench/bench_cpu_split.py`), landing as the next run committed its
row (its start 1.2 → 0.7 ms). Whoever waits for records (`settle`, `drain`, a read of the store)
ends the linger at once.
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from collections import deque
from concurrent.futures import Future
from typing import Any

from flotilla.audit.store import AuditStore

__all__ = ["RunAuditWriter"]

log = logging.getLogger(__name__)

BATCH = 256
"""The most records one background append takes."""
IDLE_S = 5.0
"""The writer thread ends after this long with nothing queued (a store no longer used keeps none)."""
LINGER_S = 0.05
"""How long the writer waits for more records before an append that is not full."""


class RunAuditWriter:
    def __init__(self, audit: AuditStore) -> None:
        self.audit = audit
        self._queue: deque[tuple[str, dict[str, Any], Future[None]]] = deque()
        self._pending: dict[str, Future[None]] = {}
        self._lock = threading.Lock()
        self._queued = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._waited_for = False  # someone waits for queued records: append without lingering
        audit.settle_before_reads(self.drain)
        # The writer is a daemon thread; a process that exits without draining still writes what is queued.
        atexit.register(_drain_if_alive, weakref.ref(self))

    def now(self, run_id: str, event: dict[str, Any]) -> None:
        """Append the record in the caller's thread, after the run's earlier ones."""
        self.settle(run_id)
        self.audit.record("run", {"run_id": run_id, **event}, run_id=run_id)

    def later(self, run_id: str, event: dict[str, Any]) -> None:
        """Append the record in the background, after every record queued before it."""
        future: Future[None] = Future()
        with self._queued:
            self._queue.append((run_id, event, future))
            self._pending[run_id] = future
            if self._thread is None:
                self._thread = threading.Thread(target=self._write_forever, name="flotilla-run-audit", daemon=True)
                self._thread.start()
            self._queued.notify()
        future.add_done_callback(lambda done: self._done(run_id, done))

    def settle(self, run_id: str) -> None:
        """Wait until the run's background record is in the chain (or has failed: then record
        repair appends it from the row; the run's own progress does not stop for it)."""
        with self._lock:
            future = self._pending.get(run_id)
        if future is not None:
            self._hurry()
            try:
                future.result()
            except Exception:  # noqa: BLE001 — logged in _done; recoverable from the row
                pass

    def drain(self) -> None:
        """Every background record on disk (before shutdown)."""
        with self._lock:
            pending = list(self._pending.values())
        if pending:
            self._hurry()
        for future in pending:
            try:
                future.result()
            except Exception:  # noqa: BLE001 — logged in _done
                pass

    def _write_forever(self) -> None:
        while True:
            with self._queued:
                if not self._queue and not self._queued.wait_for(lambda: self._queue, timeout=IDLE_S):
                    self._thread = None  # idle: the next `later` starts another
                    return
                self._queued.wait_for(lambda: len(self._queue) >= BATCH or self._waited_for, timeout=LINGER_S)
                self._waited_for = False
                batch = [self._queue.popleft() for _ in range(min(len(self._queue), BATCH))]
            try:
                self.audit.record_many([("run", {"run_id": run_id, **event}, run_id) for run_id, event, _ in batch])
            except Exception:  # noqa: BLE001 — one at a time, so a record the store refuses fails alone
                for run_id, event, future in batch:
                    try:
                        self.audit.record("run", {"run_id": run_id, **event}, run_id=run_id)
                    except Exception as exc:  # noqa: BLE001 — logged in _done; repairable from the row
                        future.set_exception(exc)
                    else:
                        future.set_result(None)
            else:
                for _, _, future in batch:
                    future.set_result(None)

    def _hurry(self) -> None:
        with self._queued:
            self._waited_for = True
            self._queued.notify()

    def _done(self, run_id: str, future: Future[None]) -> None:
        with self._lock:
            if self._pending.get(run_id) is future:
                del self._pending[run_id]
        if (error := future.exception()) is not None:
            log.warning("run %s: its audit record was not appended (%s); record repair appends it from the run's row", run_id, error)


def _drain_if_alive(writer: weakref.ref[RunAuditWriter]) -> None:
    alive = writer()
    if alive is not None:
        alive.drain()
