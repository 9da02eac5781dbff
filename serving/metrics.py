"""Prometheus metrics: request counts, latency histograms, errors and the model version served.

Each app gets its own registry (tests create many apps in one process). With several uvicorn
workers, ``PROMETHEUS_MULTIPROC_DIR`` (set by ``serving/server.py``) makes ``/metrics`` sum
over all workers.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

disable_created_metrics()  # the *_created series double the output and nobody graphs them

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """The service's metrics on one registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        reg = None if self.multiprocess else self.registry  # multiprocess values live in files
        self.requests = Counter("recsys_http_requests_total", "HTTP requests", ["method", "route", "status"], registry=reg)
        self.latency = Histogram("recsys_http_request_duration_seconds", "request latency", ["method", "route"], buckets=_BUCKETS, registry=reg)
        self.errors = Counter("recsys_http_errors_total", "responses with status >= 400", ["route", "status"], registry=reg)
        self.model_info = Gauge("recsys_model_info", "1 for the model bundle version being served", ["version"], registry=reg, multiprocess_mode="liveall")
        self.reloads = Counter("recsys_model_reloads_total", "bundle reload attempts", ["outcome"], registry=reg)
        if self.multiprocess:
            multiprocess.MultiProcessCollector(self.registry)

    def set_version(self, version: str, previous: str | None = None) -> None:
        if previous is not None and previous != version:
            self.model_info.labels(previous).set(0)
        self.model_info.labels(version).set(1)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Pure ASGI middleware (no BaseHTTPMiddleware overhead): times every HTTP request by route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            # The template ('/v1/items/{item_id}') keeps label cardinality bounded; unmatched paths share one label.
            name = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.requests.labels(method, name, str(status[0])).inc()
            self.metrics.latency.labels(method, name).observe(time.perf_counter() - start)
            if status[0] >= 400:
                self.metrics.errors.labels(name, str(status[0])).inc()


class BodyTooLarge(Exception):
    """The request body exceeded the server's limit."""


class BodyLimitMiddleware:
    """Refuses request bodies over ``limit`` bytes: by Content-Length up front, else while streaming."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await _send_413(send, self.limit)
            return
        seen = [0]

        async def limited_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                seen[0] += len(message.get("body", b""))
                if seen[0] > self.limit:
                    raise BodyTooLarge()
            return message

        await self.app(scope, limited_receive, send)


async def _send_413(send: Send, limit: int) -> None:
    import json

    body = json.dumps(
        {"error": "payload_too_large", "message": f"body: request body larger than {limit:,} bytes", "fields": [{"field": "body", "problem": f"larger than {limit:,} bytes"}]}
    ).encode()
    await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
