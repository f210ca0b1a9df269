"""A circuit breaker per upstream account: fail fast while the service is down, probe its return."""

from __future__ import annotations

import time
from collections.abc import Callable


class CircuitBreaker:
    """Closed -> open after ``threshold`` consecutive failures -> half-open after ``reset_seconds``.

    In the half-open state one request is let through as a probe; its success closes the
    circuit, its failure opens it again for another ``reset_seconds``.
    """

    def __init__(
        self,
        threshold: int,
        reset_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self._threshold = threshold
        self._reset = reset_seconds
        self._clock = clock
        self._on_change = on_change
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None

    def retry_after(self) -> float:
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self._reset - self._clock())

    def allow(self) -> bool:
        """May a request go out now? In half-open state, only the first caller gets True."""
        if self._opened_at is None:
            return True
        if self._clock() - self._opened_at < self._reset or self._probing:
            return False
        self._probing = True
        return True

    def abandon(self) -> None:
        """The half-open probe ended with no verdict (cancelled): let the next caller probe.

        Without this a cancelled probe would leave the circuit open for good.
        """
        self._probing = False

    def success(self) -> None:
        self._failures = 0
        self._probing = False
        if self._opened_at is not None:
            self._opened_at = None
            if self._on_change:
                self._on_change(False)

    def failure(self) -> None:
        self._failures += 1
        was_open = self._opened_at is not None
        if self._probing or self._failures >= self._threshold:
            self._opened_at = self._clock()
            self._probing = False
            if not was_open and self._on_change:
                self._on_change(True)
