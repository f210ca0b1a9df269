"""The gateway's one middleware: every request's bookkeeping in a single pure ASGI hop.

It runs, in order, what four middlewares did one ASGI hop each: the request's id
(``gateway.http.middleware``), the access line (``gateway.ops.access``), the in-flight counts
(``gateway.ops.inflight``) and the header guard. The request's raw headers are scanned once, for
the id, for duplicated headers and for the headers the doors read (kept in the ASGI state); the
answer's start message is seen once, for its status, its content type and the id headers. The
steps stay in their own layers: ``http/`` knows no metrics and no logs, and this module, above
it, calls both.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.http.middleware import (
    REQUEST_HEADERS,
    refuse_duplicate_header,
    scan_headers,
    stamp_request_id,
)
from gateway.http.shapes import ErrorShapes
from gateway.ops.access import write_access_line
from gateway.ops.inflight import (
    COUNTED_PREFIXES,
    LoopTasks,
    is_event_stream,
    register_once,
    requests_gauge,
)
from gateway.ops.metrics import Metrics


class GatewayMiddleware:
    """Id, access line, in-flight counts and header guard for every HTTP request.

    Duplicated single headers are refused with a 400 in the shape of the path's door
    (``shapes``; OpenAI's by default); the refusal is counted, logged and carries the id.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, shapes: ErrorShapes | None = None) -> None:
        self.app = app
        self.shapes = shapes or ErrorShapes()
        self.streams = metrics.streams_active
        self.requests = requests_gauge(metrics.registry)
        if not metrics.multiprocess:
            register_once(metrics.registry, LoopTasks())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        scanned = scan_headers(scope["headers"])
        duplicate = scanned.duplicate
        state = scope.setdefault("state", {})
        state["request_id"] = scanned.request_id
        state[REQUEST_HEADERS] = scanned.headers
        stamp = scanned.request_id.encode("latin-1")
        counted = scope["path"].startswith(COUNTED_PREFIXES)
        status = 500
        streaming = False

        async def send_once_seen(message: Message) -> None:
            nonlocal status, streaming
            if message["type"] == "http.response.start":
                status = message["status"]
                stamp_request_id(message, stamp)
                if counted and not streaming and is_event_stream(message["headers"]):
                    streaming = True
                    self.streams.inc()
            await send(message)

        if counted:
            self.requests.inc()
        try:
            if duplicate is not None:
                await refuse_duplicate_header(self.shapes, scope, send_once_seen, duplicate)
            else:
                await self.app(scope, receive, send_once_seen)
        finally:
            if counted:
                self.requests.dec()
                if streaming:
                    self.streams.dec()
            write_access_line(scope, status, started)
