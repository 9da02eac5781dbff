"""A lean path for the two hot JSON endpoints (``POST /v1/candidates``, ``POST /v1/recommendations``).

FastAPI's per-request machinery (dependency solving, body field handling, routing through several
layers) cost ~1 ms of CPU per request: a third of what a ``/v1/candidates`` request on a 1M-item
catalogue may spend at 400 req/s on two cores. This pure ASGI middleware answers the *ordinary*
request itself: a small ``application/json`` body that validates against the same pydantic
request model, answered by the same payload builder as the FastAPI route.

Everything else is handed to the FastAPI route unchanged (the body replayed): invalid or
malformed JSON, other content types, large bodies (images), no bundle loaded yet. So every error
answer is still produced by the route and the app's handlers, byte for byte. Exceptions raised by
the service (unknown items, invalid filters, a bad image) go to the app's own exception handlers,
as Starlette's ``ExceptionMiddleware`` would send them; anything else propagates to the
server-error handler (a logged, clean JSON 500). The middleware sits inside the metrics and
body-limit middlewares, so requests are counted and timed under the route's template as before.

Where the answer is computed: handing a request to a worker thread and back to the event loop
cost ~0.6 ms of CPU per request here (thread wake-ups, the loop's self-pipe, GIL hand-over): a
fifth of a 1M-item ``/v1/candidates`` answer. So each endpoint keeps a moving average of its
compute time; while that stays under ``inline_below_ms`` (``RECSYS_SERVE_INLINE_MS``, default 5) a
request is answered on the event loop itself, which then blocks for no longer than the thread hop
would have saved. Slower endpoints (a reranked H&M list: ~35 ms), and the requests an endpoint
marks as always slow (``Endpoint.slow``: in this app, a text or image preference, an encoder pass),
run in the thread pool so health checks, reloads and other connections are not held up behind
them; those marked requests are not timed, so they do not move the endpoint's average.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import math
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from serving.metrics import ASGIApp, Message, Receive, Scope, Send

# Larger bodies (a base64 photo) take the FastAPI route: decoding an image dwarfs its overhead.
MAX_FAST_BODY = 64 * 1024


class Endpoint:
    """One fast-pathed endpoint.

    Attributes:
        model: the request body model (validated exactly as the route validates it).
        answer: (service, validated body) -> the response.
        slow: validated body -> whether this request is always too slow for the event loop.
        recent_ms: moving average of ``answer``'s CPU time in its thread (inf until one has been timed).
    """

    SMOOTHING = 0.1  # weight of the newest timing in the moving average

    def __init__(self, model: type[BaseModel], answer: Callable[[Any, Any], Response], slow: Callable[[Any], bool] = lambda _request: False):
        self.model, self.answer, self.slow = model, answer, slow
        self.recent_ms = math.inf

    def timed(self, service: Any, request: Any) -> Response:
        """``answer``, timing it into :attr:`recent_ms`.

        CPU time of the calling thread, not wall time: under load a pooled request's wall time also
        counts the wait for the GIL and the cores, which kept cheap answers off the event loop
        exactly when the hop cost most.
        """
        start = time.thread_time()
        try:
            return self.answer(service, request)
        finally:
            ms = (time.thread_time() - start) * 1000
            self.recent_ms = ms if math.isinf(self.recent_ms) else self.recent_ms + self.SMOOTHING * (ms - self.recent_ms)


class JsonFastPath:
    """Pure ASGI middleware: see the module docstring.

    Args:
        app: the next ASGI app.
        fastapi_app: the FastAPI app (its routes for the metrics label, its exception handlers).
        endpoints: path -> :class:`Endpoint` (POST only).
        inline_below_ms: answer on the event loop while the endpoint's recent compute time is below
            this (default ``RECSYS_SERVE_INLINE_MS``, else 5; 0 = always in the thread pool).
    """

    def __init__(self, app: ASGIApp, fastapi_app: Any, endpoints: dict[str, Endpoint], inline_below_ms: float | None = None):
        self.app, self.fastapi_app, self.endpoints = app, fastapi_app, endpoints
        self.inline_below_ms = float(os.environ.get("RECSYS_SERVE_INLINE_MS", "5")) if inline_below_ms is None else inline_below_ms
        self._routes: dict[str, Any] = {}
        self._pool: ThreadPoolExecutor | None = None

    def _executor(self) -> ThreadPoolExecutor:
        """Threads for the model calls, so the event loop stays free (health, reloads, other requests).

        A plain executor: anyio's thread pool (what FastAPI uses) costs ~0.4 ms of CPU per call here.
        """
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=int(os.environ.get("RECSYS_SERVE_POOL", "8")), thread_name_prefix="recsys-fastpath")
        return self._pool

    def _route(self, path: str) -> Any:
        route = self._routes.get(path)
        if route is None:
            route = next(r for r in self.fastapi_app.routes if getattr(r, "path", None) == path and "POST" in getattr(r, "methods", ()))
            self._routes[path] = route
        return route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self.endpoints.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        content_type = length = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
            elif name == b"content-length":
                length = value
        if content_type != b"application/json" or length is None or not length.isdigit() or int(length) > MAX_FAST_BODY:
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        service = self.fastapi_app.state.holder.service
        try:
            request = endpoint.model.model_validate(json.loads(body)) if service is not None else None
        except Exception:  # noqa: BLE001 - the route answers it (400, 422 ...) exactly as without this path
            request = None
        if request is None:
            await self.app(scope, _replay(body, receive), send)
            return
        scope["route"] = self._route(scope["path"])  # the metrics label, as the router would set it
        try:
            if endpoint.slow(request):
                response = await asyncio.get_running_loop().run_in_executor(self._executor(), endpoint.answer, service, request)
            elif endpoint.recent_ms < self.inline_below_ms:
                response = endpoint.timed(service, request)
            else:
                response = await asyncio.get_running_loop().run_in_executor(self._executor(), endpoint.timed, service, request)
        except Exception as exc:
            handler = self._handler(exc)
            if handler is None:
                raise
            response = handler(Request(scope), exc)
            if inspect.isawaitable(response):
                response = await response
        await response(scope, receive, send)

    def _handler(self, exc: Exception) -> Callable[[Request, Exception], Response] | None:
        """The app's handler for ``exc`` (by class, most specific first), leaving plain exceptions to the 500 handler."""
        handlers = self.fastapi_app.exception_handlers
        for cls in type(exc).__mro__:
            if cls is Exception:
                return None
            if cls in handlers:
                return handlers[cls]
        return None


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields the already-read body once, then the connection's further messages."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
