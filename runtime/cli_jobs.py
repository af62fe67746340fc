"""What the `flotilla runs …` commands share: build the runtime, run one job on its runner.

Both map a FlotillaError to its message on stderr and exit code 2 (runtime/cli.py `fail`), so a
bad flotilla.yaml or an unknown run never prints a traceback; the runtime is closed after the job.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from flotilla.audit.errors import FlotillaError

if TYPE_CHECKING:
    from flotilla.runtime.settings import Settings
    from flotilla.runtime.wiring import Runtime

__all__ = ["load_runtime", "run_on_runner"]

T = TypeVar("T")


def load_runtime(*, not_on_temporal: str | None = None) -> tuple[Settings, Runtime]:
    """The settings and the runtime built from them; with `not_on_temporal`, that message (exit 2) on the temporal backend."""
    from flotilla.runtime.cli import fail
    from flotilla.runtime.settings import load_settings
    from flotilla.runtime.wiring import build_runtime  # imports LangGraph and the model stack

    try:
        settings = load_settings()
        if not_on_temporal is not None and settings.backend == "temporal":
            raise fail(not_on_temporal)
        return settings, build_runtime(settings)
    except FlotillaError as exc:
        raise fail(exc.message) from None


def run_on_runner(runtime: Runtime, job: Callable[[Any], Awaitable[T]]) -> T:
    """`job(runner)` inside the runner's context on a new event loop; the runtime is closed after, even on error."""
    import asyncio

    from flotilla.runtime.cli import fail

    async def go() -> T:
        async with runtime.runner as runner:
            return await job(runner)

    try:
        return asyncio.run(go())
    except FlotillaError as exc:
        raise fail(exc.message) from None
    finally:
        runtime.close()
