"""`flotilla worker`: a stateless process running flotilla workflows from a Temporal task queue."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

__all__ = ["worker"]


def worker(
    task_queue: Annotated[Optional[str], typer.Option("--task-queue", "-q", help="Temporal task queue (default: temporal.task_queue).")] = None,
    workflow: Annotated[Optional[list[str]], typer.Option("--workflow", "-w", help="A workflow this worker runs (name or YAML file); repeat. Default: every built-in and registered one.")] = None,
    address: Annotated[Optional[str], typer.Option("--address", help="Temporal frontend host:port (default: temporal.address).")] = None,
    namespace: Annotated[Optional[str], typer.Option("--namespace", help="Temporal namespace (default: temporal.namespace).")] = None,
) -> None:
    """Run workflows submitted to the temporal backend (`flotilla run --backend temporal`, `serve`).

    Any number of workers, on any machine sharing the run and audit stores, may serve one queue:
    each step is a Temporal activity, retried on another worker if this one dies.
    """
    import asyncio
    import signal

    from rich.console import Console

    from flotilla.audit.errors import ConfigError, FlotillaError, MissingExtra
    from flotilla.graphs.catalog import list_workflows, load_workflow
    from flotilla.graphs.spec import SpecError
    from flotilla.runtime.cli import fail
    from flotilla.runtime.settings import load_settings
    from flotilla.runtime.wiring import build_runtime

    try:
        MissingExtra.require("the temporal backend (`flotilla worker`)", "temporal", "temporalio", "temporalio.langgraph")
        settings = load_settings()
        options = settings.temporal.model_copy(update={k: v for k, v in {"task_queue": task_queue, "address": address, "namespace": namespace}.items() if v})
        settings.temporal = options
        # Temporal's retry policy retries a step: the model clients' own retries are off.
        settings.models = {alias: endpoint.model_copy(update={"max_retries": 0}) for alias, endpoint in settings.models.items()}
        specs = {}
        for name in workflow or list_workflows(settings.workflows, python=True):
            spec = load_workflow(name, settings.workflows)
            specs[spec.name] = spec
        runtime = build_runtime(settings)
    except SpecError as exc:
        raise fail(str(exc)) from None
    except FlotillaError as exc:
        raise fail(exc.message) from None

    from flotilla.graphs.backends.temporal import TemporalBackend
    from flotilla.graphs.backends.temporal_worker import build_workers

    console = Console(stderr=True)

    async def go() -> None:
        client = await TemporalBackend(options, runtime.runs).client()
        def skipped(name: str, why: str) -> None:  # the default set: run what this machine can
            console.print(f"[yellow]note:[/] workflow {name} is not run by this worker: {why}", highlight=False)

        # One Temporal worker per workflow version: runs of another version never reach this process.
        running = build_workers(client, runtime, specs, options, task_queue=options.task_queue, on_skip=None if workflow else skipped)
        if not specs:
            raise ConfigError("this worker can run none of the workflows; name them with --workflow")
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):  # finish in-flight steps' bookkeeping, then leave
            loop.add_signal_handler(sig, lambda: [asyncio.ensure_future(w.shutdown()) for w in running.values()])
        console.print(f"flotilla worker: {options.address} namespace {options.namespace}, queues [bold]{', '.join(sorted(running))}[/]", highlight=False)
        try:
            await asyncio.gather(*(w.run() for w in running.values()))
        finally:
            await runtime.runner.aclose()

    try:
        asyncio.run(go())
    except FlotillaError as exc:
        raise fail(exc.message) from None
    except ValueError as exc:  # temporalio-langgraph refusing a graph (e.g. a node with a LangGraph retry policy)
        raise fail(f"cannot run these workflows on Temporal: {exc}") from None
    finally:
        runtime.close()


def run_on_temporal(settings, workflow: str, data: bytes, *, as_json: bool, confidential: bool, initiator: str) -> int:
    """`flotilla run --backend temporal`: submit to the task queue, print the steps as workers run
    them, and the result; the exit code as for a local run."""
    import asyncio
    import dataclasses
    import json
    import sys

    from rich.console import Console

    from flotilla.audit.errors import FlotillaError, InvalidInput, MissingExtra
    from flotilla.runtime.cli import _STATUS_EXIT, EXIT_INVALID, fail

    if (missing := MissingExtra.check("the temporal backend", "temporal", "temporalio", "temporalio.langgraph")) is not None:
        raise fail(missing.message)
    from flotilla.audit.runs import RunStore
    from flotilla.graphs.backends.base import Submission
    from flotilla.graphs.backends.temporal import TemporalBackend
    from flotilla.graphs.catalog import load_workflow
    from flotilla.graphs.runner import RunResult
    from flotilla.runtime.console import RunPrinter, print_result

    console = Console(stderr=as_json)
    printer = None if as_json else RunPrinter(console)
    backend = TemporalBackend(settings.temporal, RunStore(settings.run_store_url), workflows=settings.workflows)

    async def go() -> dict:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"input is not UTF-8 text (byte {exc.start}); convert it to UTF-8 text first") from None
        spec = load_workflow(workflow, settings.workflows)
        run_id = await backend.submit(Submission(str(workflow), text, initiator=initiator, confidential=confidential))
        async for event in backend.events(run_id):
            if printer is not None:
                printer(event)
            elif event.kind == "notice":  # e.g. no worker serves this workflow version: say so while waiting
                console.print(f"note: {event.data['message']}", highlight=False, markup=False, soft_wrap=True)
            if event.kind == "approval":  # paused until someone decides: the record says what for
                record = await backend.status(run_id)
                return {"run_id": run_id, "workflow": spec.name, "status": "waiting_approval", "steps": record.steps, "approval": record.approval}
        return await backend.wait(run_id)

    try:
        outcome = asyncio.run(go())
    except FlotillaError as exc:
        raise fail(exc.message) from None
    names = {f.name for f in dataclasses.fields(RunResult)}
    result = RunResult(**{k: v for k, v in outcome.items() if k in names})
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict(), ensure_ascii=False) + "\n")
    else:
        print_result(console, result, f"the audit store (`flotilla audit show {result.run_id}`)")
    code = _STATUS_EXIT[result.status]
    if result.error and result.error.get("code") in ("invalid_input", "missing_extra"):
        code = EXIT_INVALID
    return code
