"""Keeping the poller leases of this process through event-loop stalls (issue 28).

A lease renewed only from the event loop is lost whenever the loop stalls for longer than the
lease (a burst of status answers to parse, a garbage collection): another process takes over,
whole logs are resent and, until the old holder notices, both poll. A short lease cannot be
traded for a long one either: a process that dies must hand over within a few ticks.

So a daemon thread with its own (synchronous) Redis connection renews the leases this process
holds every third of a lease, but only while the event loop's heartbeat is recent: a loop
stalled for longer than ``stall_seconds`` (or a process that died) lets its leases lapse. Leases
are still *taken* only by the event loop, so a process whose loop does not run never takes one.
When a renewal finds the lease gone, the loop is told at once (``on_lost``) so it stops polling
the other processes' jobs before its next tick.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

import redis
from redis.exceptions import RedisError

logger = logging.getLogger("gateway.poller")

#: Renew the lease only if this process holds it; 1 when renewed.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""


class LeaseKeeper:
    """Renews this process's leases from a thread while the event loop beats."""

    def __init__(
        self,
        url: str,
        holder: str,
        lease_ms: int,
        stall_seconds: float,
        timeout: float,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.holder = holder
        self.lease_ms = lease_ms
        self.stall_seconds = stall_seconds
        self.renewals = 0  # renewals the thread made (tests and diagnostics)
        self._redis = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self._renew = self._redis.register_script(_RENEW)
        self._loop = loop
        self._held: dict[str, Callable[[], None]] = {}  # lease key -> on_lost (loop side)
        self._lock = threading.Lock()
        self._beat = time.monotonic()
        self._stop = threading.Event()
        self._beating = loop.create_task(self._heartbeat(), name="lease-heartbeat")
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)
        self._thread.start()

    def holds(self, key: str) -> bool:
        """Does this process hold ``key``, as far as the last take or renewal knows?"""
        return key in self._held

    def hold(self, key: str, on_lost: Callable[[], None]) -> None:
        """The loop took (or renewed) ``key``: keep it renewed from now on."""
        with self._lock:
            self._held[key] = on_lost

    def drop(self, key: str) -> None:
        """The loop found ``key`` held elsewhere, or gives it up: stop renewing it."""
        with self._lock:
            self._held.pop(key, None)

    async def _heartbeat(self) -> None:
        """Proof that the event loop runs: the thread renews only while this is recent."""
        period = min(self.lease_ms / 3000, self.stall_seconds / 4)
        while True:
            self._beat = time.monotonic()
            await asyncio.sleep(period)

    def _run(self) -> None:
        period = self.lease_ms / 3000
        while not self._stop.wait(period):
            if time.monotonic() - self._beat > self.stall_seconds:
                continue  # the loop is stuck (or gone): let the leases lapse
            with self._lock:
                keys = list(self._held)
            for key in keys:
                try:
                    renewed = self._renew(keys=[key], args=[self.holder, self.lease_ms])
                except (RedisError, OSError):
                    continue  # the loop's own tick notices Redis failing
                if renewed:
                    self.renewals += 1
                    continue
                with self._lock:
                    on_lost = self._held.pop(key, None)
                if on_lost is not None:
                    logger.info("shared polling: the lease %s passed to another process", key)
                    try:
                        self._loop.call_soon_threadsafe(on_lost)
                    except RuntimeError:  # the loop closed
                        return

    async def aclose(self) -> None:
        """Stop renewing (the leases lapse or are released by their relays)."""
        self._stop.set()
        self._beating.cancel()
        await asyncio.to_thread(self._thread.join, self.lease_ms / 1000 + 1.0)
        self._redis.close()
