"""Progress a node reports while it runs (e.g. research sub-agents starting and finishing).

The runner installs a sink for the run; node tasks inherit it through their context. This
replaces LangGraph's "custom" stream mode, whose concurrent streaming keeps node tasks
running after the run itself has been cancelled.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

__all__ = ["report_progress", "progress_sink"]

_sink: ContextVar[Callable[[dict[str, Any]], None] | None] = ContextVar("flotilla_progress_sink", default=None)


def report_progress(payload: dict[str, Any]) -> None:
    """Hand `payload` (with a `kind`, e.g. "notice") to the run's event sink, if any."""
    sink = _sink.get()
    if sink is not None:
        sink(payload)


@contextlib.contextmanager
def progress_sink(sink: Callable[[dict[str, Any]], None]) -> Iterator[None]:
    token = _sink.set(sink)
    try:
        yield
    finally:
        _sink.reset(token)
