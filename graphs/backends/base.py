"""The one run-backend interface: submit, status, events, approve / reject, cancel.

Three backends implement it (DESIGN.md, "Durability and scale"):

    local     the in-process WorkflowRunner with its SQLite checkpointer (the default), plus crash
              recovery: a run whose process died is found and resumed, not left `running`
    postgres  the same runner with LangGraph's Postgres checkpointer (one production node)
    temporal  stateless `flotilla worker`s on a Temporal task queue (temporalio-langgraph)

Every front door — the CLI, the MCP gateway, the HTTP run API, the audit page — goes through
this interface, so approvals, cancellation and idempotency mean the same thing everywhere.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from flotilla.audit.errors import FlotillaError
from flotilla.audit.runs import RunRecord
from flotilla.graphs.runner import RunEvent, RunNotFound

__all__ = [
    "RunBackend",
    "Submission",
    "Decision",
    "RunNotFound",
    "RunNotWaiting",
    "ApprovalForbidden",
    "BackendUnavailable",
]


class RunNotWaiting(FlotillaError):
    """An approve / reject / cancel for a run that is not in a state that allows it (HTTP 409)."""

    code = "run_not_waiting"


class ApprovalForbidden(FlotillaError):
    """The caller's role may not decide this approval (HTTP 403)."""

    code = "approval_forbidden"


class BackendUnavailable(FlotillaError):
    """The backend cannot take work now (the Temporal server is down, …): HTTP 503, nothing lost."""

    code = "backend_unavailable"


@dataclass(frozen=True, slots=True)
class Submission:
    workflow: str
    """A registered workflow name (or a workflow file path for the CLI)."""
    input: str
    run_id: str | None = None
    initiator: str | None = None
    """Who asked: `cli`, `mcp:http`, `api:<token name>`, `eval:<id>:<config>`, …"""
    confidential: bool = False
    idempotency_key: str | None = None
    """The same key never starts two runs: a second submit returns the first run's id."""


@dataclass(frozen=True, slots=True)
class Decision:
    """A person's answer to a run waiting for approval; kept as an audit record in the chain."""

    action: Literal["approve", "reject"]
    approver: str
    """Who decided (`--as NAME`, the approver token's name)."""
    reason: str = ""
    edit: dict[str, Any] | None = None
    """Approve with changes: fields replacing those of the output awaiting approval."""


@runtime_checkable
class RunBackend(Protocol):
    name: str

    async def submit(self, submission: Submission) -> str:
        """Start a run (or find the one its idempotency key started); return its run id at once."""
        ...

    async def status(self, run_id: str) -> RunRecord:
        """The run's record; RunNotFound for an unknown id."""
        ...

    def events(self, run_id: str) -> AsyncIterator[RunEvent]:
        """The run's events so far, then live ones, ending after its `finished` event (or when it
        starts waiting for approval, with an `approval` event)."""
        ...

    async def decide(self, run_id: str, decision: Decision) -> RunRecord:
        """Approve or reject a run in `waiting_approval`; RunNotWaiting (409) otherwise — a second
        decision changes nothing."""
        ...

    async def cancel(self, run_id: str) -> RunRecord:
        """Cancel an unfinished run (its record says `cancelled`); RunNotWaiting for a finished one."""
        ...

    async def health(self) -> str | None:
        """None when the backend can take work; otherwise why not (`/healthz` reports it, 503)."""
        ...

    async def aclose(self) -> None: ...
