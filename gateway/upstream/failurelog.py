"""One clear log line when the jobs API fails, per kind of failure and at most once a minute.

A client only sees ``502 upstream_error``; the operator needs the server log to say which
upstream was called, what happened and what to check, without a line per request (a wrong
``base_url`` fails every request) and without the token.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import httpx

from gateway.upstream.errors import UpstreamFailure

logger = logging.getLogger("gateway.upstream")

#: Seconds between two lines about the same kind of failure.
INTERVAL = 60.0


def hint(failure: UpstreamFailure, base_url: str) -> str:
    """What to check, for the failures a wrong configuration causes."""
    if failure.status_code in (404, 405):
        return (
            f"; is upstream.base_url right? The gateway calls {base_url.rstrip('/')}/jobs, and "
            "a base_url with a wrong path (or a page that is not the jobs API) answers "
            f"{failure.status_code}"
        )
    if failure.status_code in (401, 403):
        return "; the upstream refused the account's token: check upstream_token"
    if failure.kind == "connect_error":
        return "; nothing answers there: check upstream.base_url and that the service is up"
    if failure.kind == "bad_response":
        return "; is upstream.base_url the jobs API?"
    return ""


class FailureLog:
    """Warns about upstream failures, each ``(kind, status)`` at most once per ``interval``."""

    def __init__(
        self,
        base_url: str,
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        url = httpx.URL(base_url)
        self.where = f"{url.scheme}://{url.netloc.decode('ascii')}{url.path.rstrip('/')}"
        self.interval = interval
        self._clock = clock
        self._last: dict[tuple[str, int | None], float] = {}
        self._quiet: dict[tuple[str, int | None], int] = {}

    def note(self, call: str, failure: UpstreamFailure) -> None:
        if failure.kind == "circuit_open":  # no call was made: the failures before were said
            return
        key = (failure.kind, failure.status_code)
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._quiet[key] = self._quiet.get(key, 0) + 1
            return
        self._last[key] = now
        more = self._quiet.pop(key, 0)
        since = f" ({more} more like it since the last line)" if more else ""
        logger.warning(
            "upstream %s call to %s failed: %s%s%s",
            call,
            self.where,
            failure.message,
            hint(failure, self.where),
            since,
            extra={"upstream_failure": failure.kind, "status_code": failure.status_code},
        )
