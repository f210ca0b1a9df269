"""The gateway's errors in Ollama's shape: ``{"error": "<message>"}``, with Ollama's status.

Ollama's clients raise on any status >= 400 with the ``error`` text (the ``ollama`` libraries'
``ResponseError`` carries the status code too), so the status keeps the gateway's meaning:
400 for a bad request, 401/403 for keys, 404 for an unknown model or route, 413, 429 with
``retry-after`` for the client's own limits, 499 when it left. Where Ollama has its own, it
wins: a busy grid (the upstream full, or unavailable) is Ollama's 503 "server busy", and a
stream that fails after it began ends with one ``{"error": ...}`` line.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from gateway.errors import GatewayError, RateLimited

#: RateLimited codes that say the grid is full, not that this client sent too much.
_UPSTREAM_BUSY = frozenset({"upstream_rate_limited", "upstream_capacity"})


class NotServed(GatewayError):
    """An Ollama route this gateway does not serve (models live on the grid; no embeddings)."""

    status_code = 501
    default_code = "not_served"


def status(error: GatewayError) -> int:
    if isinstance(error, RateLimited) and error.code in _UPSTREAM_BUSY:
        return 503
    return error.status_code


def error_body(error: GatewayError) -> dict[str, Any]:
    return {"error": error.message}


def error_shape(error: GatewayError) -> tuple[int, dict[str, Any]]:
    """The status and body of ``error`` in this door's shape: what the app registers for
    ``/api/`` (:class:`gateway.http.shapes.ErrorShapes`), so that answers written before any
    route runs (the connection guard's 408/431, the header guard's 400) are in it too."""
    return status(error), error_body(error)


def error_line(error: GatewayError) -> bytes:
    """The last line of a stream that failed after it began."""
    return orjson.dumps(error_body(error)) + b"\n"


def error_response(
    error: GatewayError, headers: dict[str, str] | None = None, request_id: str | None = None
) -> Response:
    out = {**(headers or {}), **error.headers}
    if request_id is not None:
        out["x-request-id"] = request_id
    return Response(
        orjson.dumps(error_body(error)),
        status_code=status(error),
        media_type="application/json; charset=utf-8",
        headers=out,
    )
