"""Helpers every route shares: the runtime, the request id, error answers."""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import GatewayError
from gateway.middleware import new_request_id
from gateway.runtime import Runtime


def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


def request_id(request: Request) -> str:
    rid = request.scope.get("state", {}).get("request_id")
    return rid if isinstance(rid, str) else new_request_id()


def error_response(error: GatewayError, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(error.to_dict()),
        status_code=error.status_code,
        media_type="application/json",
        headers={**(headers or {}), **error.headers},
    )


def client_timeout(request: Request) -> float | None:
    """The client's own timeout, where it tells us (the openai SDK sends x-stainless-timeout)."""
    for name in ("x-stainless-timeout", "x-request-timeout", "request-timeout"):
        value = request.headers.get(name)
        if value:
            try:
                return float(value)
            except ValueError:
                continue
    return None
