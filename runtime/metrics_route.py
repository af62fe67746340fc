"""`/metrics` on `flotilla serve`: the live per-specialist metrics in the Prometheus text format.

Behind a bearer token like the rest of the app: FLOTILLA_METRICS_TOKEN (what the scraper sends,
`authorization: {credentials: …}` in a Prometheus scrape config), or the compliance role's
FLOTILLA_AUDIT_TOKEN. With neither set the route is not served.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from flotilla.audit.metrics import FlotillaMetrics

__all__ = ["add_metrics_route"]


def add_metrics_route(app: FastAPI, metrics: FlotillaMetrics, tokens: Sequence[str]) -> None:
    from prometheus_client import CONTENT_TYPE_LATEST
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    accepted = [t.encode() for t in tokens if t]
    if not accepted:
        return

    async def scrape(request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        given = auth[7:].strip().encode() if auth.lower().startswith("bearer ") else b""
        # Every token compared, so the time taken does not say which one nearly matched.
        if not given or not any([hmac.compare_digest(given, token) for token in accepted]):
            return Response(
                "metrics token required: send Authorization: Bearer $FLOTILLA_METRICS_TOKEN\n",
                status_code=401,
                media_type="text/plain",
                headers={"WWW-Authenticate": 'Bearer realm="flotilla-metrics"'},
            )
        # Collecting walks every series: off the event loop, like a sync FastAPI route.
        return Response(await run_in_threadpool(metrics.prometheus_text), media_type=CONTENT_TYPE_LATEST)

    app.router.routes.append(Route("/metrics", scrape, methods=["GET"]))
