"""The HTTP run API on `flotilla serve`: `/v1/runs` — submit, status, events (server-sent),
approve, reject, cancel. Thin on purpose: parse, authorise, call the run backend, map errors.

Bearer tokens carry scopes (runtime/api_auth.py): `submit` starts and cancels runs, `read` sees
them and their events, `approve` decides runs waiting for a person (the token's name is the
approver's name in the audit chain). Errors: 401 no or unknown token, 403 missing scope or a
role the approval refuses, 404 unknown run, 409 a run not in a state that allows it, 400 an
unknown workflow or unusable input, 422 a malformed body, 503 the backend cannot take work.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations, some of them local.
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Path
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import BaseModel, ConfigDict, Field

from flotilla.audit.errors import ConfigError, FlotillaError, InvalidInput
from flotilla.audit.runs import RunRecord
from flotilla.graphs.backends.base import ApprovalForbidden, BackendUnavailable, Decision, RunBackend, RunNotFound, RunNotWaiting, Submission
from flotilla.runtime.api_auth import API_TOKEN_ENV, Caller, TokenTable

__all__ = ["add_run_api", "STATUS_OF"]

STATUS_OF: tuple[tuple[type[FlotillaError], int], ...] = (
    (RunNotFound, 404),
    (RunNotWaiting, 409),
    (ApprovalForbidden, 403),
    (BackendUnavailable, 503),
    (InvalidInput, 400),
    (ConfigError, 400),  # an unknown workflow, a workflow that does not build
)

RunId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$", description="The run id `POST /v1/runs` returned.")]


class RunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workflow: str = Field(min_length=1, max_length=200, description="A built-in or registered workflow name (`flotilla workflows`).")
    input: str = Field(description="The document text the workflow runs on.")
    confidential: bool = Field(False, description="Keep every model call of the run on local models.")


class RunAccepted(BaseModel):
    run_id: str
    status_url: str
    events_url: str


class RunView(BaseModel):
    run_id: str
    workflow: str
    workflow_version: str
    status: str = Field(description="pending, running, waiting_approval, succeeded, needs_review, failed, blocked, cancelled, interrupted")
    output: Any = None
    error: dict[str, Any] | None = None
    steps: list[dict[str, Any]] = Field(default_factory=list)
    approval: Any = Field(None, description="What a `waiting_approval` run waits for (its step, what the approver sees).")
    initiator: str | None = None
    started_at: datetime
    ended_at: datetime | None = None

    @classmethod
    def of(cls, record: RunRecord) -> "RunView":
        return cls(
            run_id=record.run_id, workflow=record.workflow, workflow_version=record.workflow_version, status=record.status,
            output=record.output, error=record.error, steps=record.steps, approval=getattr(record, "approval", None),
            initiator=record.initiator, started_at=record.started_at, ended_at=record.ended_at,
        )


class ApproveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field("", max_length=2000)
    edit: dict[str, Any] | None = Field(None, description="Approve with changes: fields replacing those of the output awaiting approval.")


class RejectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field("", max_length=2000)


class Problem(BaseModel):
    detail: str


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": Problem} for code in codes}


@contextlib.contextmanager
def _mapped() -> Iterator[None]:
    """A typed flotilla error as its HTTP status, with its message saying what to fix."""
    try:
        yield
    except FlotillaError as exc:
        status = next((code for kind, code in STATUS_OF if isinstance(exc, kind)), None)
        if status is None:
            raise
        raise HTTPException(status, exc.message) from None


def add_run_api(app: FastAPI, backend: RunBackend | None, tokens: TokenTable) -> None:
    """Add `/v1/runs…` to `app` (and so to its OpenAPI schema)."""
    bearer = HTTPBearer(auto_error=False, scheme_name="apiToken", description=f"A run-API token: `api_tokens` in flotilla.yaml or ${API_TOKEN_ENV}.")
    router = APIRouter(prefix="/v1/runs", tags=["runs"], responses=_errors(401, 403))

    def needs(scope: str) -> Callable[..., Any]:
        def caller(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Caller:
            challenge = {"WWW-Authenticate": 'Bearer realm="flotilla-runs"'}
            if not tokens:
                raise HTTPException(401, f"the run API has no tokens configured: set ${API_TOKEN_ENV} or `api_tokens` in flotilla.yaml", headers=challenge)
            if credentials is None:
                raise HTTPException(401, "send `Authorization: Bearer <token>`", headers=challenge)
            who = tokens.identify(credentials.credentials)
            if who is None:
                raise HTTPException(401, "that token is not a run-API token", headers=challenge)
            if not who.may(scope):
                raise HTTPException(403, f"token {who.name!r} lacks the {scope!r} scope (it has: {', '.join(sorted(who.scopes))})")
            return who

        return caller

    def running() -> RunBackend:
        if backend is None:
            raise HTTPException(503, "no run backend is configured on this server")
        return backend

    Backend = Annotated[RunBackend, Depends(running)]

    @router.post("", status_code=202, response_model=RunAccepted, responses=_errors(400, 503), summary="Start a run")
    async def submit_run(
        body: RunRequest,
        backend: Backend,
        who: Annotated[Caller, Depends(needs("submit"))],
        idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=200,
                                                      description="The same key never starts two runs: a repeat answers with the first run's id.")] = None,
    ) -> JSONResponse:
        submission = Submission(body.workflow, body.input, initiator=f"api:{who.name}", confidential=body.confidential, idempotency_key=idempotency_key)
        with _mapped():
            run_id = await backend.submit(submission)
        status_url = app.url_path_for("get_run", run_id=run_id)
        accepted = RunAccepted(run_id=run_id, status_url=status_url, events_url=app.url_path_for("run_events", run_id=run_id))
        return JSONResponse(accepted.model_dump(), status_code=202, headers={"Location": status_url})

    @router.get("/{run_id}", response_model=RunView, responses=_errors(404), summary="A run's status, steps and output")
    async def get_run(run_id: RunId, backend: Backend, _: Annotated[Caller, Depends(needs("read"))]) -> RunView:
        with _mapped():
            return RunView.of(await backend.status(run_id))

    async def existing(run_id: RunId, backend: Backend, _: Annotated[Caller, Depends(needs("read"))]) -> str:
        with _mapped():  # a 404 before the stream starts, not inside it
            await backend.status(run_id)
        return run_id

    @router.get("/{run_id}/events", response_class=EventSourceResponse, responses=_errors(404), summary="A run's events (server-sent)")
    async def run_events(run_id: Annotated[str, Depends(existing)], backend: Backend) -> AsyncIterator[ServerSentEvent]:
        """Past events replayed, then live ones: `started`, `notice`, `step`, then `finished` — or
        `approval` when the run stops to wait for a person (the stream ends there)."""
        seq = 0
        async for event in backend.events(run_id):
            seq += 1
            yield ServerSentEvent(event=event.kind, id=str(seq), data={"run_id": event.run_id, **event.data})

    async def decided(backend: RunBackend, run_id: str, decision: Decision) -> RunView:
        with _mapped():
            return RunView.of(await backend.decide(run_id, decision))

    @router.post("/{run_id}/approve", response_model=RunView, responses=_errors(404, 409), summary="Approve a run waiting for approval")
    async def approve_run(run_id: RunId, backend: Backend, who: Annotated[Caller, Depends(needs("approve"))], body: ApproveRequest | None = None) -> RunView:
        body = body or ApproveRequest()
        return await decided(backend, run_id, Decision("approve", who.name, body.reason, body.edit))

    @router.post("/{run_id}/reject", response_model=RunView, responses=_errors(404, 409), summary="Reject a run waiting for approval")
    async def reject_run(run_id: RunId, backend: Backend, who: Annotated[Caller, Depends(needs("approve"))], body: RejectRequest | None = None) -> RunView:
        return await decided(backend, run_id, Decision("reject", who.name, (body or RejectRequest()).reason))

    @router.post("/{run_id}/cancel", response_model=RunView, responses=_errors(404, 409), summary="Cancel an unfinished run")
    async def cancel_run(run_id: RunId, backend: Backend, _: Annotated[Caller, Depends(needs("submit"))]) -> RunView:
        with _mapped():
            return RunView.of(await backend.cancel(run_id))

    app.include_router(router)
