"""The gateway's error tree in Anthropic's shape: ``{"type": "error", "error": {type, message}}``.

The anthropic SDKs pick their exception class from the status code and Claude Code decides
whether to retry from it, so the status follows Anthropic's table rather than the gateway's
own where they differ:

    BadRequest and kin (400, 405, 415,  -> same status, invalid_request_error
      408, 431, 499)
    AuthenticationFailed (401)          -> 401 authentication_error
    PermissionDenied (403)              -> 403 permission_error
    NotFound (404)                      -> 404 not_found_error
    PayloadTooLarge (413)               -> 413 request_too_large
    RateLimited (429), the client's own -> 429 rate_limit_error, with retry-after
    RateLimited by the upstream, or     -> 529 overloaded_error: the service is busy, not the
      ServiceUnavailable (503)               client over its limits; retried by the SDKs
    DeadlineExceeded (504)              -> 504 timeout_error
    UpstreamError (502), InternalError  -> 500 api_error
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

from gateway.errors import (
    AuthenticationFailed,
    BadRequest,
    ClientDisconnected,
    DeadlineExceeded,
    GatewayError,
    HeadersTooLarge,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    RequestTimeout,
    ServiceUnavailable,
    UnsupportedMediaType,
)

#: RateLimited codes that say the upstream is full, not that this client sent too much.
_UPSTREAM_BUSY = frozenset({"upstream_rate_limited", "upstream_capacity"})

_OVERLOADED = (529, "overloaded_error")


def status_and_type(error: GatewayError) -> tuple[int, str]:
    """The HTTP status and Anthropic error ``type`` for ``error``."""
    if isinstance(
        error,
        BadRequest
        | MethodNotAllowed
        | UnsupportedMediaType
        | RequestTimeout
        | HeadersTooLarge
        | ClientDisconnected,
    ):
        return error.status_code, "invalid_request_error"
    if isinstance(error, AuthenticationFailed):
        return 401, "authentication_error"
    if isinstance(error, PermissionDenied):
        return 403, "permission_error"
    if isinstance(error, NotFound):
        return 404, "not_found_error"
    if isinstance(error, PayloadTooLarge):
        return 413, "request_too_large"
    if isinstance(error, RateLimited):
        return _OVERLOADED if error.code in _UPSTREAM_BUSY else (429, "rate_limit_error")
    if isinstance(error, ServiceUnavailable):
        return _OVERLOADED
    if isinstance(error, DeadlineExceeded):
        return 504, "timeout_error"
    return 500, "api_error"


def error_body(error: GatewayError, request_id: str | None = None) -> dict[str, Any]:
    """The error object; also what an ``event: error`` carries in a stream."""
    _, kind = status_and_type(error)
    body: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": error.message}}
    if request_id is not None:
        body["request_id"] = request_id
    return body


def error_shape(error: GatewayError) -> tuple[int, dict[str, Any]]:
    """The status and body of ``error`` in this door's shape: what the app registers for
    ``/v1/messages`` (:class:`gateway.http.shapes.ErrorShapes`), so that answers written
    before any route runs (the connection guard's 408/431) are in it too."""
    status, _ = status_and_type(error)
    return status, error_body(error)


def error_response(
    error: GatewayError, headers: dict[str, str] | None = None, request_id: str | None = None
) -> Response:
    """A JSON error answer; ``request-id`` is the header the anthropic SDKs report."""
    status, _ = status_and_type(error)
    out = {**(headers or {}), **error.headers}
    if request_id is not None:
        out["request-id"] = request_id
    return Response(
        json.dumps(error_body(error, request_id)),
        status_code=status,
        media_type="application/json",
        headers=out,
    )
