"""A cap on jobs in flight per upstream account, with a bounded, first-come waiting line.

Protects an upstream account from a burst: requests beyond the cap wait (up to their
deadline) in FIFO order, and are refused at once with 429 when the line is full.
"""

from __future__ import annotations

import asyncio
import collections

from gateway.errors import RateLimited


class JobSlots:
    def __init__(self, capacity: int | None, queue_size: int) -> None:
        self.capacity = capacity
        self.queue_size = queue_size
        self.in_use = 0
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def _fits(self, n: int) -> bool:
        assert self.capacity is not None
        # A request larger than the whole cap may still run alone rather than never.
        return self.in_use + n <= self.capacity or self.in_use == 0

    async def acquire(self, n: int, wait: float) -> None:
        if self.capacity is None:
            self.in_use += n
            return
        if not self._waiters and self._fits(n):
            self.in_use += n
            return
        if len(self._waiters) >= self.queue_size:
            raise RateLimited(
                "The upstream account is at its cap of jobs in flight and the waiting line is "
                "full; try again shortly.",
                retry_after=1.0,
                code="upstream_capacity",
            )
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (n, waiter)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(wait):
                await waiter
        except BaseException as exc:
            if entry in self._waiters:
                self._waiters.remove(entry)
            elif waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.release(n)  # granted just as we gave up: hand the slots on
            if isinstance(exc, TimeoutError):
                raise RateLimited(
                    "The upstream account stayed at its cap of jobs in flight for the whole wait.",
                    retry_after=1.0,
                    code="upstream_capacity",
                ) from None
            raise
        # Granted: release() already counted our slots in ``in_use``.

    def refuse_waiting(self, error: BaseException) -> None:
        """Fail every request still in line with ``error`` (the gateway is shutting down)."""
        while self._waiters:
            _, waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)

    def release(self, n: int) -> None:
        self.in_use = max(0, self.in_use - n)
        while self._waiters:
            need, waiter = self._waiters[0]
            if waiter.done():
                self._waiters.popleft()
                continue
            if not self._fits(need):
                break
            self._waiters.popleft()
            self.in_use += need
            waiter.set_result(None)
