"""Prometheus metrics: requests by route and status, latency, and the charging counters."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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


class MetricsMiddleware:
    """Requests by route template and status, and their latency. A plain ASGI
    middleware: Starlette's BaseHTTPMiddleware costs a task group and a
    streamed body per request, a large share of a call start."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status_code = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "GET")
            HTTP_REQUESTS.labels(method, template, str(status_code)).inc()
            HTTP_LATENCY.labels(method, template).observe(time.perf_counter() - started)
