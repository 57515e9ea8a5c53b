"""Prometheus metrics: requests by route and status, latency, and the charging counters."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import Request, Response
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.routing import Match

REGISTRY = CollectorRegistry(auto_describe=True)

HTTP_REQUESTS = Counter(
    "commcredits_http_requests_total",
    "HTTP requests by route template, method and status",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_LATENCY = Histogram(
    "commcredits_http_request_duration_seconds",
    "HTTP request latency by route template",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
CALLS_STARTED = Counter(
    "commcredits_calls_started_total",
    "Calls allowed at start, by funding",
    ["funding"],
    registry=REGISTRY,
)
CALLS_DENIED = Counter(
    "commcredits_calls_denied_total", "Calls denied, by reason", ["reason"], registry=REGISTRY
)
SECONDS_GRANTED = Counter(
    "commcredits_seconds_granted_total", "Seconds granted to calls", registry=REGISTRY
)
CHARGES_POSTED = Counter(
    "commcredits_charges_posted_total",
    "Call charges posted to the ledger",
    ["source"],
    registry=REGISTRY,
)
RECHARGES = Counter(
    "commcredits_recharges_total", "Auto-recharges by outcome", ["outcome"], registry=REGISTRY
)
MAILS = Counter(
    "commcredits_mails_total", "Mail deliveries by outcome", ["outcome"], registry=REGISTRY
)


def _route_template(request: Request) -> str:
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match == Match.FULL:
            return getattr(route, "path", "unmatched")
    return "unmatched"


async def middleware(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    started = time.perf_counter()
    response = await call_next(request)
    route = request.scope.get("route")
    template = getattr(route, "path", None) or _route_template(request)
    HTTP_REQUESTS.labels(request.method, template, str(response.status_code)).inc()
    HTTP_LATENCY.labels(request.method, template).observe(time.perf_counter() - started)
    return response
