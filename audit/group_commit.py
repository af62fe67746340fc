"""Group commit: writes from many threads share one transaction, so one fsync serves them all.

A caller blocks until the transaction holding its write has committed (its write is on disk
when `run` returns, as with a transaction of its own). Whoever arrives while no transaction is
open leads: it takes every write queued so far, runs them in order in one transaction, each in
its own savepoint (a failing write fails alone; a write alone needs none), commits, and wakes the others. Writes that
arrived meanwhile are led by one of their callers. No thread of its own, nothing to shut down.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection

__all__ = ["GroupCommit"]

T = TypeVar("T")


class _Write(Generic[T]):
    __slots__ = ("write", "result", "error", "finished")

    def __init__(self, write: Callable[[Connection], T]) -> None:
        self.write = write
        self.result: Any = None
        self.error: BaseException | None = None
        self.finished = False


class GroupCommit:
    """`run(write)`: `write(conn)` inside a shared transaction opened by `transaction()`."""

    def __init__(self, transaction: Callable[[], AbstractContextManager[Connection]]) -> None:
        self._transaction = transaction
        self._cond = threading.Condition()
        self._pending: list[_Write[Any]] = []
        self._leading = False

    def run(self, write: Callable[[Connection], T]) -> T:
        job: _Write[T] = _Write(write)
        with self._cond:
            self._pending.append(job)
            while self._leading and not job.finished:
                self._cond.wait()
            if not job.finished:
                self._leading = True
                batch, self._pending = self._pending, []
        if not job.finished:
            try:
                self._commit(batch)
            finally:
                with self._cond:
                    for item in batch:
                        item.finished = True
                    self._leading = False
                    self._cond.notify_all()
        if job.error is not None:
            raise job.error
        return job.result

    def _commit(self, batch: list[_Write[Any]]) -> None:
        try:
            with self._transaction() as conn:
                if len(batch) == 1:  # alone: its failure rolls the transaction back, no savepoint needed
                    batch[0].result = batch[0].write(conn)
                    return
                for item in batch:
                    try:
                        with conn.begin_nested():
                            item.result = item.write(conn)
                    except Exception as exc:
                        item.error = exc
        except BaseException as exc:  # the commit itself failed: nothing of the batch is on disk
            for item in batch:
                if item.error is None:
                    item.error = exc
            if not isinstance(exc, Exception):
                raise
