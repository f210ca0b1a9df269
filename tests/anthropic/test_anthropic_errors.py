"""The error tree in Anthropic's shape, with the statuses the anthropic SDK maps."""

from __future__ import annotations

import json

import pytest
from anthropic.types import ErrorResponse

from gateway.anthropic.errors import error_body, error_response, status_and_type
from gateway.errors import (
    AuthenticationFailed,
    BadRequest,
    DeadlineExceeded,
    GatewayError,
    HeadersTooLarge,
    InternalError,
    JobFailed,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    RequestTimeout,
    ServiceUnavailable,
    UnsupportedParameter,
    UpstreamError,
)


@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        (BadRequest("x"), 400, "invalid_request_error"),
        (UnsupportedParameter("x"), 400, "invalid_request_error"),
        (AuthenticationFailed("x"), 401, "authentication_error"),
        (PermissionDenied("x"), 403, "permission_error"),
        (NotFound("x"), 404, "not_found_error"),
        (PayloadTooLarge("x"), 413, "request_too_large"),
        (RateLimited("x", retry_after=2), 429, "rate_limit_error"),
        (RateLimited("x", code="upstream_capacity"), 529, "overloaded_error"),
        (RateLimited("x", code="upstream_rate_limited"), 529, "overloaded_error"),
        (ServiceUnavailable("x"), 529, "overloaded_error"),
        (DeadlineExceeded("x"), 504, "timeout_error"),
        (UpstreamError("x"), 500, "api_error"),
        (JobFailed("x"), 500, "api_error"),
        (InternalError("x"), 500, "api_error"),
        (RequestTimeout("x"), 408, "invalid_request_error"),
        (HeadersTooLarge("x"), 431, "invalid_request_error"),
    ],
)
def test_statuses_and_types(error: GatewayError, status: int, kind: str) -> None:
    assert status_and_type(error) == (status, kind)
    body = error_body(error, "req_1")
    if kind != "request_too_large":  # Anthropic's API sends it; the SDK's union lacks it
        assert ErrorResponse.model_validate(body).error.type == kind


def test_the_response_carries_request_id_and_retry_after() -> None:
    response = error_response(RateLimited("slow down", retry_after=2.2), {"x-a": "1"}, "req_1")
    assert response.status_code == 429
    assert response.headers["request-id"] == "req_1"
    assert response.headers["retry-after"] == "3"
    assert response.headers["x-a"] == "1"
    assert json.loads(response.body) == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "slow down"},
        "request_id": "req_1",
    }


def test_the_body_without_a_request_id() -> None:
    assert error_body(NotFound("no")) == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "no"},
    }
