"""The access line for every request the completion lifecycle does not log itself.

Completions write a rich line when their exchange ends (``Runtime.finish``); the models list,
admin calls, usage reports, 404s and 405s would otherwise leave no trace. The gateway's
middleware (``gateway.ops.middleware``) writes the same line for them, with the route template
(never the raw path, which the client chooses), the status and the duration. Probes and
scrapes are logged at ``debug``: a load balancer's every few seconds would drown the rest.
"""

from __future__ import annotations

import logging
import time

from starlette.types import Scope

from gateway.ops.logs import log_request

access_log = logging.getLogger("gateway.access")
#: Set in a request's scope state by a route that writes its own access line.
LOGGED_ELSEWHERE = "access_logged"
QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})


def write_access_line(scope: Scope, status: int, started: float) -> None:
    """The access line of a finished exchange, unless its route wrote its own."""
    state = scope.get("state") or {}
    if state.get(LOGGED_ELSEWHERE):
        return
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
