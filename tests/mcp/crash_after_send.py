"""A workflow process that dies (SIGKILL) right after a tool call was answered:
`python crash_after_send.py DIR WORKFLOW RUN_ID INPUT SERVERS_JSON [unrecorded|recorded]`.

`unrecorded` (default): dies before the journal records the result (the call may have happened).
`recorded`: dies after recording it, before the step's checkpoint (the step will run again).

The run's stores live in DIR (runs, checkpoints, the tool-call journal), so a second process —
the test — can resume the run exactly as `flotilla run --resume` after a crash would.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: tests.support

from flotilla.graphs import load_workflow
from flotilla.tools import open_hub
from flotilla.tools.config import StdioServerConfig
from flotilla.tools.journal import ToolCallJournal


ALIASES = ("specialist", "specialist-extract", "specialist-analyze", "specialist-decide", "specialist-write")


def canned() -> Any:
    from flotilla.agents.models.testing import FunctionModel
    from tests.mcp.helpers import canned_reply

    return FunctionModel(lambda request: canned_reply(request.schema_name, request.json_schema))


class DiesAfterSend(ToolCallJournal):
    """The call went out and its answer came back; the process dies before writing it down."""

    def finish(self, key: str, result: dict[str, Any], *, is_error: bool) -> None:
        os.kill(os.getpid(), signal.SIGKILL)


class DiesAfterRecord(ToolCallJournal):
    """The result is written down; the process dies before the step's checkpoint."""

    def finish(self, key: str, result: dict[str, Any], *, is_error: bool) -> None:
        super().finish(key, result, is_error=is_error)
        os.kill(os.getpid(), signal.SIGKILL)


def build_runner(directory: Path, servers: dict[str, Any], journal: ToolCallJournal, telemetry: Any = None, model: Any = None):
    """A real runner over `servers` (stdio configs as dicts). Every model alias is `model`, by
    default an instant model with the document-triage agents' canned answers."""
    from flotilla.agents.models.registry import ModelEndpoint, ModelRegistry
    from flotilla.audit.runs import RunStore
    from flotilla.audit.telemetry import Telemetry
    from flotilla.graphs import WorkflowRunner

    configs = {name: StdioServerConfig(**cfg) for name, cfg in servers.items()}
    telemetry = telemetry or Telemetry()
    hub = open_hub(configs, lock_file=directory / "mcp.lock.json", tracer=telemetry.tracer, journal=journal)
    return WorkflowRunner(
        registry=ModelRegistry({alias: ModelEndpoint() for alias in ALIASES}, embedded=lambda: model or canned(), http_client=None),
        telemetry=telemetry,
        runs=RunStore(f"sqlite:///{directory / 'runs.sqlite'}"),
        checkpoint_path=directory / "checkpoints.sqlite",
        max_input_bytes=10_000,
        tools=hub,
    )


async def main(directory: Path, workflow: str, run_id: str, text: str, servers: dict[str, Any], mode: str) -> None:
    journal = (DiesAfterRecord if mode == "recorded" else DiesAfterSend)(f"sqlite:///{directory / 'runs.sqlite'}")
    runner = build_runner(directory, servers, journal)
    await runner.run(load_workflow(workflow), text, run_id=run_id, initiator="test")
    raise SystemExit("the run finished: the process should have died after sending the call")


if __name__ == "__main__":
    mode = sys.argv[6] if len(sys.argv) > 6 else "unrecorded"
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], json.loads(sys.argv[5]), mode))
