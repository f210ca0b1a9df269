"""Helpers every route shares: the request id, error answers, the client's deadline.

Plain HTTP: the runtime a route reads is :func:`gateway.state.runtime`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.errors import GatewayError
from gateway.http.middleware import new_request_id
from gateway.http.responses import openai_error

#: Headers in which clients state their timeout, in seconds, most specific first.
_TIMEOUT_HEADERS = (
    "x-stainless-read-timeout",
    "x-stainless-timeout",
    "x-request-timeout",
    "request-timeout",
)


def request_id(request: Request) -> str:
    rid = request.scope.get("state", {}).get("request_id")
    return rid if isinstance(rid, str) else new_request_id()


def error_response(error: GatewayError, headers: dict[str, str] | None = None) -> Response:
    """An error in OpenAI's shape, the answer of routes outside any other door."""
    return openai_error(error, headers)


def client_timeout(headers: Mapping[str, str]) -> float | None:
    """The client's own timeout in seconds, where it tells us.

    The openai Python SDK sends ``x-stainless-read-timeout`` (its read timeout), the Node SDK
    ``x-stainless-timeout``.
    """
    for name in _TIMEOUT_HEADERS:
        value = headers.get(name)
        if value:
            try:
                return float(value)
            except ValueError:
                continue
    return None


def deadline_cap(headers: Mapping[str, str], data: dict[str, Any]) -> float | None:
    """How long the client will wait for this answer, a little less: its deadline's cap.

    Only an answer sent in one piece is capped: there the client's (read) timeout bounds the
    whole wait. A stream's read timeout bounds only the silence between chunks, which
    keep-alives fill, so a long stream must not be cut to it. The small margin lets the client
    receive the gateway's 504, which says why, rather than give up first with a bare timeout.
    """
    timeout = client_timeout(headers)
    if timeout is None or timeout <= 0 or data.get("stream") is True:
        return None
    return timeout - min(1.0, 0.05 * timeout)


def allowed_methods(request: Request) -> list[str]:
    """The methods the app's own routes serve at this path (another method is a 405).

    Read from the router, so the answer always matches the routes (and ``/openapi.json``).
    """
    path = request.url.path
    methods: set[str] = set()
    for route in request.app.router.routes:
        catch_all = not isinstance(route, Route) or "{rest" in route.path
        if not catch_all and route.methods and route.path_regex.match(path):
            methods |= route.methods
    methods.discard("HEAD")
    return sorted(methods)
