"""PII redaction of recorded content in a worker process (`RedactionWorker`).

Imports nothing heavy: Presidio, spaCy (and what they pull in) load in the worker only.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

__all__ = ["RedactionWorker"]


class RedactionWorker:
    """`redact_many` in a process of its own, so spaCy's CPU-bound work never holds the event
    loop's GIL (a thread would: a busy exporter thread slows every agent step) and its memory
    (spaCy, Presidio, and the libraries they import) stays out of the runtime's process.

    The worker starts on first use (spawned, not forked: the runtime has threads) and loads
    the model there. If it dies, the call raises (the caller drops the content it could not
    redact: nothing raw leaks) and the next call starts a new one.

    `niceness`: the worker runs at a lower CPU priority than the runtime (Unix nice). Nothing a
    run waits for goes through it (spans are exported, and finished runs' records redacted, in
    the background), so when runs and redaction want more CPU than there is, runs go first and
    the export catches up when the load eases — late, never lost (the span write-ahead log and
    the full drain at shutdown). At equal priority, the runtime, its model servers and this
    worker share the cores evenly, and a burst of runs waits on redaction it does not need.
    """

    def __init__(self, *, niceness: int = 10) -> None:
        self.niceness = niceness
        self._pool: Any = None
        self._lock = threading.Lock()

    def redact_many(self, texts: Sequence[str]) -> list[str]:
        from concurrent.futures.process import BrokenProcessPool

        pool = self._started()
        try:
            return pool.submit(_redact_in_worker, list(texts)).result()
        except BrokenProcessPool:
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            raise

    def _started(self) -> Any:
        with self._lock:
            if self._pool is None:
                import multiprocessing
                from concurrent.futures import ProcessPoolExecutor

                self._pool = ProcessPoolExecutor(
                    max_workers=1,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_start_worker,
                    initargs=(os.getpid(), self.niceness),
                )
            return self._pool

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)


_WORKER_REDACTOR: Any = None


def _start_worker(parent: int, niceness: int) -> None:
    if niceness:
        os.nice(niceness)
    _exit_with_parent(parent)


def _exit_with_parent(parent: int) -> None:
    """The worker ends when the runtime's process does, even one killed without a shutdown: its
    task queue holds both pipe ends, so a dead parent would otherwise leave it waiting forever."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="flotilla-parent-watch", daemon=True).start()


def _redact_in_worker(texts: list[str]) -> list[str]:
    """Runs in the worker process: the model loads there, once."""
    global _WORKER_REDACTOR
    if _WORKER_REDACTOR is None:
        # This process only runs spaCy's small CPU model: Presidio's optional transformers engine
        # and thinc's optional PyTorch support (both imported when installed) would add ~380 MB.
        # Marked absent, they are skipped as if not installed; nothing else runs here.
        for optional in ("torch", "transformers"):
            sys.modules.setdefault(optional, None)  # type: ignore[arg-type]
        _spacy_without_its_cli()
        from flotilla.guardrails.pii import PresidioRail
        from flotilla.guardrails.pii_batch import BatchRedactor

        _WORKER_REDACTOR = BatchRedactor(PresidioRail())
    return _WORKER_REDACTOR.redact_many(texts)


def _spacy_without_its_cli() -> None:
    """spaCy's package imports its command line (typer, weasel, rich, httpx, jinja2: ~12 MB here) only
    to re-export `spacy.info`. This process never runs it: placeholders stand in, and the one call
    Presidio could make, `spacy.cli.download` for a model not installed, fails plainly instead
    (flotilla never downloads a model at run time; guardrails/pii.py)."""
    if "spacy" in sys.modules:
        return
    import types

    def absent(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("spaCy's command line is not loaded in the redaction worker: install the spaCy model package")

    cli = types.ModuleType("spacy.cli")
    cli.__path__ = []  # a package, so `spacy.cli.info` resolves to the module below
    info = types.ModuleType("spacy.cli.info")
    info.info = absent  # type: ignore[attr-defined]
    cli.info = info  # type: ignore[attr-defined]
    cli.download = absent  # type: ignore[attr-defined]
    sys.modules["spacy.cli"], sys.modules["spacy.cli.info"] = cli, info
    import spacy

    spacy.cli = cli  # type: ignore[attr-defined]
