"""What can go wrong talking to the jobs API, with enough context to decide on a retry."""

from __future__ import annotations

import math
from typing import Literal

from gateway.errors import GatewayError, RateLimited, ServiceUnavailable, UpstreamError

FailureKind = Literal[
    "http_error", "timeout", "connect_error", "bad_response", "rejected", "circuit_open"
]


class UpstreamFailure(Exception):
    """A jobs-API request failed.

    ``reached`` is False only when the request certainly never reached the service (the
    connection was refused, or the circuit is open), which is the one case where a
    non-idempotent submission may be retried.
    """

    def __init__(
        self,
        kind: FailureKind,
        message: str,
        *,
        reached: bool = True,
        status_code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.reached = reached
        self.status_code = status_code
        self.retry_after = retry_after

    @property
    def transient(self) -> bool:
        """Worth trying again later (the service may recover), as opposed to a refusal."""
        if self.kind == "rejected":
            return False
        return not (
            self.kind == "http_error"
            and self.status_code is not None
            and 400 <= self.status_code < 500
            and self.status_code not in (408, 429)
        )

    def to_gateway_error(self) -> GatewayError:
        if self.kind == "circuit_open":
            return ServiceUnavailable(
                self.message,
                code="upstream_unavailable",
                # Whole seconds, at least 1: "0" would invite an immediate retry into the
                # still-open circuit (and round() gave 0 for the last half second of it).
                headers={"retry-after": str(max(1, math.ceil(self.retry_after or 1)))},
            )
        if self.status_code == 429:
            return RateLimited(
                f"the upstream service is rate limiting: {self.message}",
                retry_after=self.retry_after or 1.0,
                code="upstream_rate_limited",
            )
        return UpstreamError(f"upstream {self.kind.replace('_', ' ')}: {self.message}")
