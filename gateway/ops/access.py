"""The access line for every request the completion lifecycle does not log itself.

Completions write a rich line when their exchange ends (``Runtime.finish``); the models list,
admin calls, usage reports, 404s and 405s would otherwise leave no trace. This pure ASGI
middleware writes the same line for them, with the route template (never the raw path, which
the client chooses), the status and the duration. Probes and scrapes are logged at ``debug``:
a load balancer's every few seconds would drown the rest.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.ops.logs import log_request

access_log = logging.getLogger("gateway.access")
#: Set in a request's scope state by a route that writes its own access line.
LOGGED_ELSEWHERE = "access_logged"
QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, note_status)
        finally:
            state = scope.get("state") or {}
            if not state.get(LOGGED_ELSEWHERE):
                route = scope.get("route")
                template = getattr(route, "path", None) or "(unknown route)"
                log_request(
                    access_log,
                    request_id=str(state.get("request_id", "-")),
                    route=template,
                    status=status,
                    duration_ms=(time.perf_counter() - started) * 1000,
                    outcome="ok" if status < 400 else _outcome(status),
                    method=scope.get("method", "-"),
                    level=logging.DEBUG if template in QUIET_ROUTES else None,
                )


def _outcome(status: int) -> str:
    return {
        401: "invalid_api_key",
        403: "permission_denied",
        404: "not_found",
        405: "method_not_allowed",
    }.get(status, "error")
