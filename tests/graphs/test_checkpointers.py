"""One checkpointer suite, run against SQLite (the `local` backend) and PostgreSQL (the `postgres`
backend, a throwaway cluster): a run, a resume after an interrupted run (in a new runner, as the
next process would), concurrent first runs sharing one saver, a finished run's checkpoint deleted,
and an orphaned run recovered from its checkpoint."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flotilla.agents.models.base import ChatRequest, ModelClient, ModelUnavailable
from flotilla.agents.models.registry import ModelEndpoint, ModelRegistry
from flotilla.agents.models.testing import FunctionModel
from flotilla.audit.errors import ConfigError
from flotilla.audit.runs import RunStore
from flotilla.audit.telemetry import Telemetry
from flotilla.graphs import WorkflowRunner, load_workflow
from flotilla.graphs.checkpointers import open_checkpointer
from flotilla.graphs.recovery import recover_orphans
from tests.audit.conftest import pg_server  # noqa: F401 — the session's throwaway PostgreSQL cluster
from tests.audit.pg import new_database
from tests.support.triage import FOUR_AGENT_TRIAGE, TRIAGE_ANSWERS

from .conftest import ALIASES

INVOICE = (Path(__file__).resolve().parents[2] / "graphs" / "samples" / "invoice.txt").read_text()


def dead_owner() -> str:
    """The owner string of a process on this host that has exited."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    return f"{socket.gethostname()}:{proc.stdout.strip()}:exited"


@pytest.fixture(params=["sqlite", "postgres"])
def checkpoint_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "checkpoints.sqlite")
    return new_database(request.getfixturevalue("pg_server"))  # postgresql+psycopg://…, as the audit store takes it


def answering(down: dict[str, bool] | None = None) -> FunctionModel:
    """Canned triage answers; the Decision endpoint is down while `down["yes"]`."""

    def respond(request: ChatRequest) -> str:
        if down is not None and down["yes"] and request.schema_name == "Decision":
            raise ModelUnavailable("the decide endpoint is down")
        return json.dumps(TRIAGE_ANSWERS[request.schema_name])

    return FunctionModel(respond)


class Node:
    """A runner as one flotilla process builds it: its own run-store engine and checkpointer connection."""

    def __init__(self, tmp: Path, checkpoint_url: str, model: ModelClient) -> None:
        self.telemetry = Telemetry([])
        registry = ModelRegistry({a: ModelEndpoint() for a in ALIASES}, embedded=lambda: model, http_client=None)
        self.runs = RunStore(f"sqlite:///{tmp / 'runs.sqlite'}")
        self.runner = WorkflowRunner(
            registry=registry, telemetry=self.telemetry, runs=self.runs, checkpoint_path=tmp / "unused.sqlite",
            checkpoint_url=checkpoint_url, max_input_bytes=100_000,
        )

    async def close(self) -> None:
        await self.runner.aclose()
        self.telemetry.shutdown()
        self.runs.engine.dispose()


@pytest.fixture
async def nodes(tmp_path: Path, checkpoint_url: str):
    made: list[Node] = []

    def make(model: ModelClient | None = None) -> Node:
        made.append(Node(tmp_path, checkpoint_url, model or answering()))
        return made[-1]

    yield make
    for node in made:
        await node.close()


async def checkpoint_of(node: Node, run_id: str) -> Any:
    await node.runner._open_checkpointer()
    return await node.runner._saver.aget_tuple({"configurable": {"thread_id": run_id}})


async def test_a_run_succeeds_and_its_checkpoint_is_deleted(nodes, checkpoint_url: str) -> None:
    node = nodes()
    result = await node.runner.run(load_workflow(FOUR_AGENT_TRIAGE), INVOICE)
    assert result.status == "succeeded", result.error
    assert [s["agent"] for s in result.steps] == ["extract", "analyze", "decide", "write"]
    assert type(node.runner._saver).__name__ == ("AsyncSqliteSaver" if checkpoint_url.endswith(".sqlite") else "AsyncPostgresSaver")
    assert await checkpoint_of(node, result.run_id) is None  # nothing left to resume: the raw state is gone


async def test_an_interrupted_run_resumes_in_the_next_process_from_its_last_step(nodes) -> None:
    down = {"yes": True}
    model = answering(down)
    first = nodes(model)
    spec = load_workflow(FOUR_AGENT_TRIAGE)
    failed = await first.runner.run(spec, INVOICE)
    assert failed.status == "failed" and failed.error["code"] == "model_unavailable"
    kept = await checkpoint_of(first, failed.run_id)
    assert kept is not None and set(kept.checkpoint["channel_values"]["outputs"]) == {"extract", "analyze"}
    await first.close()

    down["yes"] = False
    before = len(model.requests)
    second = nodes(model)  # a new connection: what survives is what the store kept
    resumed = await second.runner.resume(spec, failed.run_id)
    assert resumed.status == "succeeded", resumed.error
    assert [r.schema_name for r in model.requests[before:]] == ["Decision", "Note"]
    assert [s["agent"] for s in resumed.steps] == ["extract", "analyze", "decide", "write"]
    assert await checkpoint_of(second, failed.run_id) is None


async def test_concurrent_first_runs_share_one_checkpointer(nodes, monkeypatch: pytest.MonkeyPatch) -> None:
    import flotilla.graphs.runner as runner_module

    opened = []

    async def counting_open(url: Any) -> Any:
        opened.append(url)
        return await open_checkpointer(url)

    monkeypatch.setattr(runner_module, "open_checkpointer", counting_open)  # counts; the real saver opens
    node = nodes()
    spec = load_workflow(FOUR_AGENT_TRIAGE)
    results = await asyncio.gather(*(node.runner.run(spec, INVOICE) for _ in range(6)))
    assert [r.status for r in results] == ["succeeded"] * 6
    assert len({r.run_id for r in results}) == 6
    assert len(opened) == 1
    for r in results:
        assert await checkpoint_of(node, r.run_id) is None


async def test_deleting_a_finished_runs_checkpoint_leaves_the_others(nodes) -> None:
    down = {"yes": True}
    node = nodes(answering(down))
    spec = load_workflow(FOUR_AGENT_TRIAGE)
    unfinished = await node.runner.run(spec, INVOICE)
    down["yes"] = False
    finished = await node.runner.run(spec, INVOICE)
    assert (unfinished.status, finished.status) == ("failed", "succeeded")
    assert await checkpoint_of(node, finished.run_id) is None
    assert await checkpoint_of(node, unfinished.run_id) is not None  # a failed run keeps what it resumes from


async def test_an_orphaned_run_is_recovered_from_its_checkpoint(nodes) -> None:
    down = {"yes": True}
    model = answering(down)
    first = nodes(model)
    spec = load_workflow(FOUR_AGENT_TRIAGE)
    crashed = await first.runner.run(spec, INVOICE)
    # As if its process died after two steps: still `running`, owned by a process that is gone.
    gone = dead_owner()
    first.runs.mark_running(crashed.run_id, owner=gone)
    await first.close()

    down["yes"] = False
    second = nodes(model)
    recovered = await recover_orphans(second.runner, lambda name, version: spec, lease_s=60)
    assert [(r.run_id, r.status, r.previous_owner) for r in recovered] == [(crashed.run_id, "succeeded", gone)]
    record = second.runs.get_run(crashed.run_id)
    assert record.status == "succeeded" and [s["agent"] for s in record.steps] == ["extract", "analyze", "decide", "write"]
    assert await recover_orphans(second.runner, lambda name, version: spec) == []  # nothing left to recover


async def test_an_unreachable_postgres_checkpointer_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot connect the Postgres checkpointer"):
        await open_checkpointer("postgresql://nobody:secret@127.0.0.1:1/none")


async def test_a_checkpoint_url_of_another_kind_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="neither a SQLite path"):
        await open_checkpointer("mysql://db/flotilla")


def test_the_postgres_backend_without_a_postgres_checkpoint_url_is_a_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from flotilla.runtime.settings import load_settings

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FLOTILLA_CONFIG", raising=False)
    with pytest.raises(ConfigError, match=r"checkpoint_url: the postgres backend keeps checkpoints in PostgreSQL: set checkpoint_url: postgresql://"):
        load_settings(backend="postgres")
    assert load_settings(backend="postgres", checkpoint_url="postgresql://u@127.0.0.1:5432/db").checkpoint_url.startswith("postgresql://")
