"""A monotonic stopwatch in milliseconds, shared by every engine for `Verdict.latency_ms`."""

from __future__ import annotations

import time

__all__ = ["Stopwatch"]


class Stopwatch:
    def __init__(self) -> None:
        self._start = time.perf_counter()

    @property
    def ms(self) -> float:
        return (time.perf_counter() - self._start) * 1000.0
