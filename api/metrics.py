"""Prometheus metrics of the API, in a registry of the app's own (two apps in one process, as in
the tests, do not share counters). Labels are route templates, never paths: a meter id in a
label would make one series per meter."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "metergate_api_requests_total",
            "HTTP requests answered, by route template, method and status",
            ("route", "method", "status"),
            registry=self.registry,
        )
        self.duration = Histogram(
            "metergate_api_request_duration_seconds",
            "Time to the start of the answer, by route template",
            ("route",),
            registry=self.registry,
        )
        self.manual_readings = Counter(
            "metergate_api_manual_readings_total",
            "Manual readings submitted, by outcome",
            ("outcome",),
            registry=self.registry,
        )


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, *, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                elapsed = time.perf_counter() - started
                self.metrics.duration.labels(_template(scope)).observe(elapsed)
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            self.metrics.requests.labels(_template(scope), scope["method"], str(status)).inc()


def _template(scope: Scope) -> str:
    """The path template of the route the router matched (it leaves it in the scope)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"
