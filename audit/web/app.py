"""`create_audit_app(store, token)`: a FastAPI sub-app the runtime mounts at /audit.

Server-rendered (Jinja2) and read-only. Access needs the compliance role's own token, given
as `Authorization: Bearer <token>` or through the sign-in form, which sets an HttpOnly cookie
holding a digest of the token (never the token itself).
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import FastAPI, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from flotilla.audit.chain import VerifyReport
from flotilla.audit.errors import ConfigError, FlotillaError
from flotilla.audit.export import RunNotFound, export_html, export_json, run_bundle
from flotilla.audit.query import VERDICTS, RunFilter, distinct_values, list_runs
from flotilla.audit.store import AuditStore
from flotilla.audit.templating import STATIC, environment
from flotilla.audit.tree import build_view
from flotilla.audit.web.approvals import APPROVER_COOKIE, Approvals

__all__ = ["create_audit_app", "COOKIE"]

COOKIE = "flotilla_audit"
_DECISION_STATUS = {"run_not_found": 404, "run_not_waiting": 409, "approval_forbidden": 403, "backend_unavailable": 503}


class _ChainStatus:
    """Chain status for the pages without re-reading a million records on every view.

    A full verify runs at most every `full_every_s`; in between, a changed head is checked
    incrementally: only the new records, linked to the last fully verified point.
    """

    def __init__(self, store: AuditStore, ttl_s: float, full_every_s: float = 300.0) -> None:
        self.store, self.ttl_s, self.full_every_s = store, ttl_s, full_every_s
        self._lock = threading.Lock()
        self._report: VerifyReport | None = None
        self._head: tuple[int, str] | None = None
        self._checked_at = self._full_at = 0.0

    def get(self) -> VerifyReport:
        head = self.store.head()
        key = (head.seq, head.hash) if head else None
        now = time.monotonic()
        with self._lock:
            report = self._report
            if report is not None and key is not None and key == self._head and now - self._checked_at < self.ttl_s:
                return report
            if report is None or not report.ok or self._head is None or now - self._full_at >= self.full_every_s:
                report = self.store.verify()
                self._full_at = now
            else:
                step = self.store.verify(after=self._head)
                report = step if not step.ok else VerifyReport(
                    True, report.checked + step.checked, report.first_seq, step.last_seq or report.last_seq,
                    None, "", step.signed, step.warnings,
                )
            self._report, self._checked_at = report, now
            # the point the next incremental check starts from: only one the report vouched for
            self._head = key if report.ok and head is not None and report.last_seq == head.seq else None
            return report


def _session_value(token: str) -> str:
    return hashlib.sha256(f"flotilla-audit-session:{token}".encode()).hexdigest()


def _date(value: str | None, field: str) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    except ValueError:
        raise HTTPException(400, f"{field} must be a date like 2026-11-22") from None


def _int(value: str | None, default: int, low: int, high: int) -> int:
    try:
        return max(low, min(high, int(value))) if value else default
    except ValueError:
        raise HTTPException(400, f"{value!r} is not a number") from None


def create_audit_app(
    store: AuditStore, token: str, *, chain_ttl_s: float = 30.0, full_verify_every_s: float = 300.0, approvals: Approvals | None = None
) -> FastAPI:
    """The /audit sub-app. Chain status is re-checked after `chain_ttl_s`; new records are checked
    incrementally, and the whole chain again every `full_verify_every_s`."""
    if not token:
        raise ConfigError("the audit page needs its own token: set FLOTILLA_AUDIT_TOKEN (the compliance role)")
    app = FastAPI(title="flotilla audit", docs_url=None, redoc_url=None, openapi_url=None)
    templates = Jinja2Templates(env=environment())
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    chain = _ChainStatus(store, chain_ttl_s, full_verify_every_s)
    session = _session_value(token)

    def authorized(request: Request) -> bool:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer ") and hmac.compare_digest(auth[7:].strip().encode(), token.encode()):
            return True
        cookie = request.cookies.get(COOKIE, "")
        return bool(cookie) and hmac.compare_digest(cookie.encode(), session.encode())

    def approver(request: Request) -> str | None:
        """The approver signed in (their approve-scope token or its cookie); never the compliance role."""
        if approvals is None:
            return None
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return approvals.by_token(auth[7:].strip())
        return approvals.by_session(request.cookies.get(APPROVER_COOKIE, ""))

    def require_page(request: Request) -> Response | None:
        if authorized(request):
            return None
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        login = request.url_for("login").include_query_params(next=target)
        return RedirectResponse(str(login), status_code=303)

    def require_api(request: Request) -> None:
        if not authorized(request):
            raise HTTPException(401, "audit token required", headers={"WWW-Authenticate": 'Bearer realm="flotilla-audit"'})

    def run_filter(request: Request) -> RunFilter:
        q = request.query_params
        esc = {"yes": True, "true": True, "no": False, "false": False}.get(q.get("escalated", ""))
        verdict = q.get("verdict") or None
        if verdict and verdict not in VERDICTS:
            raise HTTPException(400, f"verdict must be one of {', '.join(VERDICTS)}")
        until = _date(q.get("until"), "until")
        return RunFilter(
            workflow=q.get("workflow") or None,
            status=q.get("status") or None,
            since=_date(q.get("since"), "since"),
            until=until.replace(hour=23, minute=59, second=59) if until else None,
            verdict=verdict,
            escalated=esc,
            model=q.get("model") or None,
            initiator=q.get("initiator") or None,
            search=q.get("q") or None,
            limit=_int(q.get("limit"), 100, 1, 1000),
            offset=_int(q.get("offset"), 0, 0, 10**9),
        )

    @app.get("/", response_class=HTMLResponse, name="run_list")
    def run_list(request: Request) -> Response:
        if (redirect := require_page(request)) is not None:
            return redirect
        flt = run_filter(request)
        runs = list_runs(store, flt)
        params = {k: v for k, v in request.query_params.items() if k != "offset"}
        older = str(request.url_for("run_list").include_query_params(**params, offset=flt.offset + flt.limit)) if len(runs) == flt.limit else None
        newer = str(request.url_for("run_list").include_query_params(**params, offset=max(0, flt.offset - flt.limit))) if flt.offset else None
        return templates.TemplateResponse(
            request,
            "list.html",
            {
                "runs": runs,
                "older": older,
                "newer": newer,
                "f": flt,
                "since": request.query_params.get("since"),
                "until": request.query_params.get("until"),
                "options": distinct_values(store),
                "verdicts": VERDICTS,
                "chain": chain.get().to_dict(),
            },
        )

    @app.get("/stats", response_class=HTMLResponse, name="stats_page")
    def stats_page(request: Request) -> Response:
        """Per-specialist figures per workflow, with first-try adherence and escalation over time."""
        if (redirect := require_page(request)) is not None:
            return redirect
        from flotilla.audit.stats import parse_since, specialist_stats, trend
        from flotilla.audit.web.charts import trend_svg

        q = request.query_params
        since, by, workflow = q.get("since") or "7d", q.get("by") or "day", q.get("workflow") or None
        if by not in ("day", "hour"):
            raise HTTPException(400, "by must be day or hour")
        try:
            cutoff = parse_since(since)
        except ConfigError as exc:
            raise HTTPException(400, exc.message) from None
        rows = specialist_stats(store, workflow=workflow, since=cutoff)
        sections = []
        for name in sorted({r.workflow for r in rows}):
            points = trend(store, name, since=cutoff, by=by)  # type: ignore[arg-type]
            chart = trend_svg(points, title=f"{name}: first-try schema adherence and escalation per {by}")
            sections.append({"workflow": name, "rows": [r for r in rows if r.workflow == name], "chart": chart})
        context = {"sections": sections, "workflow": workflow, "since": since, "by": by,
                   "workflows": distinct_values(store)["workflow"], "chain": chain.get().to_dict()}
        return templates.TemplateResponse(request, "stats.html", context)

    @app.get("/api/stats", name="api_stats")
    def api_stats(request: Request) -> JSONResponse:
        require_api(request)
        from flotilla.audit.stats import parse_since, specialist_stats

        try:
            cutoff = parse_since(request.query_params.get("since") or "7d")
        except ConfigError as exc:
            raise HTTPException(400, exc.message) from None
        rows = specialist_stats(store, workflow=request.query_params.get("workflow") or None, since=cutoff)
        return JSONResponse([r.to_dict() for r in rows])

    @app.get("/runs/{run_id}", response_class=HTMLResponse, name="run_page")
    def run_page(request: Request, run_id: str) -> Response:
        who = approver(request)  # an approver sees the run they decide on, and only run pages
        if who is None and (redirect := require_page(request)) is not None:
            return redirect
        records = store.run_records(run_id)
        summary = store.run_summary(run_id)
        if summary is None and not records:
            raise HTTPException(404, f"no run {run_id!r} in the audit store")
        return templates.TemplateResponse(
            request,
            "run.html",
            {"run": summary or {"run_id": run_id}, "view": build_view(run_id, records), "chain": chain.get().to_dict(),
             "decision": {"approver": who, "request": request_} if who and (request_ := approvals.pending(run_id)) else None},  # type: ignore[union-attr]
        )

    @app.post("/runs/{run_id}/decision", name="run_decision")
    async def run_decision(request: Request, run_id: str, action: Annotated[str, Form()], reason: Annotated[str, Form()] = "") -> Response:
        """The Approve / Reject buttons: the backend decides under the approver's name."""
        who = approver(request)
        if who is None:
            raise HTTPException(403, "only an approver decides: sign in with a run-API token that has the approve scope (the audit token is read-only)")
        if action not in ("approve", "reject"):
            raise HTTPException(400, "action must be approve or reject")
        try:
            await approvals.decide(run_id, action, who, reason)  # type: ignore[union-attr]
        except FlotillaError as exc:
            raise HTTPException(_DECISION_STATUS.get(exc.code, 400), exc.message) from None
        return RedirectResponse(str(request.url_for("run_page", run_id=run_id)), status_code=303)

    @app.get("/runs/{run_id}/export", name="run_export")
    def run_export(request: Request, run_id: str, format: str = "html") -> Response:
        require_api(request)
        try:
            if format == "json":
                body, media = export_json(store, run_id), "application/json"
            elif format == "html":
                body, media = export_html(store, run_id), "text/html; charset=utf-8"
            else:
                raise HTTPException(400, "format must be json or html")
        except RunNotFound as exc:
            raise HTTPException(404, exc.message) from None
        filename = f"flotilla-audit-{run_id}.{format}"
        return Response(body, media_type=media, headers={"Content-Disposition": f'attachment; filename="{filename}"'})

    @app.get("/api/runs", name="api_runs")
    def api_runs(request: Request) -> JSONResponse:
        require_api(request)
        return JSONResponse(list_runs(store, run_filter(request)))

    @app.get("/api/runs/{run_id}", name="api_run")
    def api_run(request: Request, run_id: str) -> JSONResponse:
        require_api(request)
        try:
            return JSONResponse(run_bundle(store, run_id, chain.get()))
        except RunNotFound as exc:
            raise HTTPException(404, exc.message) from None

    @app.get("/api/verify", name="api_verify")
    def api_verify(request: Request) -> JSONResponse:
        require_api(request)
        return JSONResponse(chain.get().to_dict())

    @app.get("/login", response_class=HTMLResponse, name="login")
    def login_form(request: Request, next: str = "") -> Response:
        return templates.TemplateResponse(request, "login.html", {"next": next, "error": None})

    @app.post("/login", name="login_submit")
    def login_submit(request: Request, token_: Annotated[str, Form(alias="token")] = "", next: Annotated[str, Form()] = "") -> Response:
        # Only same-site paths: never redirect somewhere the form was told to.
        same_site = next if next.startswith("/") and not next.startswith("//") else None
        cookie = {"httponly": True, "samesite": "strict", "secure": request.url.scheme == "https", "path": request.scope.get("root_path") or "/"}
        name = approvals.by_token(token_) if approvals is not None else None
        if name is not None and not hmac.compare_digest(token_.encode(), token.encode()):
            if same_site is None:  # an approver opens the run pages they are sent, not the trail
                info = f"Signed in as approver {name}: open the link of the run you were asked to decide."
                response = templates.TemplateResponse(request, "login.html", {"next": "", "error": None, "info": info})
            else:
                response = RedirectResponse(same_site, status_code=303)
            response.set_cookie(APPROVER_COOKIE, approvals.session(token_), **cookie)  # type: ignore[union-attr]
            return response
        if not hmac.compare_digest(token_.encode(), token.encode()):
            return templates.TemplateResponse(request, "login.html", {"next": next, "error": "That token is not the audit token."}, status_code=401)
        response = RedirectResponse(same_site or str(request.url_for("run_list")), status_code=303)
        response.set_cookie(COOKIE, session, **cookie)
        return response

    return app
