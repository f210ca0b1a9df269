"""The error tree: what went wrong, in no door's shape.

Each door renders an error its own way (OpenAI's envelope in :mod:`gateway.http.shapes`, the
default; Anthropic's in :mod:`gateway.anthropic.errors`); the ``error_type``/``kind`` and
``code`` below are the words the default shape carries.

    GatewayError
    ├── BadRequest (400)              invalid_request_error
    │   └── UnsupportedParameter      a field the upstream cannot honour
    ├── PayloadTooLarge (413)
    ├── UnsupportedMediaType (415)
    ├── AuthenticationFailed (401)    invalid_request_error, code invalid_api_key
    ├── PermissionDenied (403)
    ├── NotFound (404)                unknown model or route
    ├── MethodNotAllowed (405)
    ├── RateLimited (429)             type requests or tokens; carries Retry-After
    ├── ServiceUnavailable (503)      circuit open, shutting down
    ├── UpstreamError (502)           the jobs API failed or a job failed
    ├── DeadlineExceeded (504)
    └── InternalError (500)           a bug; the traceback goes to the log only

Every error carries what the client needs to act on it; nothing carries a secret.
"""

from __future__ import annotations

from typing import Any, ClassVar


class GatewayError(Exception):
    status_code: ClassVar[int] = 500
    error_type: ClassVar[str] = "server_error"
    default_code: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        kind: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.headers = headers or {}
        #: The ``type`` clients branch on: the class's, unless this error says more (a 429's
        #: ``requests`` or ``tokens``, as OpenAI sends it).
        self.kind = kind or self.error_type


class BadRequest(GatewayError):
    status_code = 400
    error_type = "invalid_request_error"


class UnsupportedParameter(BadRequest):
    default_code = "unsupported_parameter"


class MethodNotAllowed(GatewayError):
    status_code = 405
    error_type = "invalid_request_error"
    default_code = "method_not_allowed"


class PayloadTooLarge(GatewayError):
    status_code = 413
    error_type = "invalid_request_error"
    default_code = "request_too_large"


class UnsupportedMediaType(GatewayError):
    status_code = 415
    error_type = "invalid_request_error"
    default_code = "unsupported_media_type"


class RequestTimeout(GatewayError):
    """The request's headers or body did not arrive in time (``server.*_timeout``)."""

    status_code = 408
    error_type = "invalid_request_error"
    default_code = "request_timeout"


class HeadersTooLarge(GatewayError):
    status_code = 431
    error_type = "invalid_request_error"
    default_code = "request_headers_too_large"


class ClientDisconnected(GatewayError):
    """The client left while its request was being read: answered to no one, logged as 499."""

    status_code = 499
    error_type = "invalid_request_error"
    default_code = "client_disconnected"


class AuthenticationFailed(GatewayError):
    status_code = 401
    error_type = "invalid_request_error"  # as OpenAI sends it, with code invalid_api_key
    default_code = "invalid_api_key"


class PermissionDenied(GatewayError):
    status_code = 403
    error_type = "permission_error"


class NotFound(GatewayError):
    status_code = 404
    error_type = "invalid_request_error"
    default_code = "not_found"


class Conflict(GatewayError):
    """The request contradicts the current state (a name already taken, a revoked key)."""

    status_code = 409
    error_type = "invalid_request_error"


class RateLimited(GatewayError):
    """OpenAI's 429 ``type`` says which limit: ``requests`` (the default) or ``tokens``."""

    status_code = 429
    error_type = "requests"
    default_code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        if retry_after is not None:
            self.headers.setdefault("retry-after", str(max(1, round(retry_after + 0.499))))


class ServiceUnavailable(GatewayError):
    status_code = 503
    error_type = "server_error"
    default_code = "service_unavailable"


class UpstreamError(GatewayError):
    status_code = 502
    error_type = "upstream_error"
    default_code = "upstream_error"


class JobFailed(UpstreamError):
    default_code = "job_failed"


class LogRewritten(UpstreamError):
    """The job's log was rewritten after part of it was streamed, and does not continue it:
    the stream ends with this error rather than ``stop`` on a draft (never silent truncation)."""

    default_code = "log_rewritten"


class InternalError(GatewayError):
    """A bug: logged with its traceback, answered without it."""

    status_code = 500
    error_type = "server_error"
    default_code = "internal_error"


class DeadlineExceeded(GatewayError):
    status_code = 504
    error_type = "timeout_error"
    default_code = "deadline_exceeded"
