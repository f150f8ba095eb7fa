"""The service's Prometheus metrics (prometheus-client), one CollectorRegistry per app.

A registry of its own (not prometheus-client's global one) lets several apps live in one process
(tests) without clashing names. Names follow Prometheus conventions: `agrl_` prefix, base units
(`_seconds`), `_total` on counters; route and method labels are the declared routes and the HTTP
methods or "other" (bounded: a client's made-up path or method token adds no series).

    agrl_http_requests_total{route,method,status}     agrl_http_request_duration_seconds{route}
    agrl_http_requests_in_flight                     agrl_batch_queue_depth (requests waiting)
    agrl_batch_requests / agrl_batch_items (per forward pass)    agrl_items_scored_total{route}
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

ROUTES = ("/v1/score", "/v1/judge", "/rerank", "/v1/rerank", "/v2/rerank", "/healthz", "/metrics")
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")  # RFC 9110 + PATCH


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.inflight = 0  # HTTP requests begun and not yet answered (the SIGTERM drain waits on it)
        self.draining = False
        r = self.registry
        self.requests = Counter("agrl_http_requests", "HTTP requests answered, by route and status",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram("agrl_http_request_duration_seconds", "time to answer a request", ["route"],
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=r)
        Gauge("agrl_http_requests_in_flight", "requests begun and not yet answered",
              registry=r).set_function(lambda: self.inflight)
        self.queue_depth = Gauge("agrl_batch_queue_depth", "requests waiting for a micro-batch", registry=r)
        self.batch_requests = Histogram("agrl_batch_requests", "requests per forward pass (micro-batch)",
                                        buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r)
        self.batch_items = Histogram("agrl_batch_items", "query-product pairs per forward pass",
                                     buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r)
        self.items = Counter("agrl_items_scored", "query-product pairs scored, by route", ["route"], registry=r)
        Gauge("agrl_draining", "1 once SIGTERM started the drain", registry=r).set_function(lambda: self.draining)


class CountRequests:
    """Pure ASGI middleware (cheaper than @app.middleware): count requests by route and status, time them."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [500]

        async def record_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        self.metrics.inflight += 1
        try:
            await self.app(scope, receive, record_status)
        finally:
            self.metrics.inflight -= 1
            route = scope["path"] if scope["path"] in ROUTES else "other"  # bounded label cardinality
            method = scope["method"] if scope["method"] in METHODS else "other"
            self.metrics.requests.labels(route, method, str(status[0])).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)
