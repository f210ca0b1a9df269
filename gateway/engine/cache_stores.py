"""Where cached answers live: this process's memory, or Redis shared by every replica.

A store maps a cache key to the bytes of one stored answer, with a time to live. It never
fails a request: a Redis that cannot be reached reads as a miss and drops writes (logged once
per outage), since serving without the cache is always possible.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from redis.exceptions import RedisError

from gateway.limits.redis import blocking_client

logger = logging.getLogger("gateway.cache")


class CacheStore(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes) -> None: ...

    async def aclose(self) -> None: ...


class MemoryStore:
    """Least-recently-used entries within ``max_entries`` and ``max_bytes``, each for ``ttl`` s."""

    def __init__(
        self,
        max_entries: int,
        max_bytes: int,
        ttl: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.ttl = ttl
        self.bytes = 0
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if self._clock() >= expires:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return value

    async def put(self, key: str, value: bytes) -> None:
        if len(value) > self.max_bytes:
            return
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (self._clock() + self.ttl, value)
        self.bytes += len(value)
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: str) -> None:
        _, value = self._entries.pop(key)
        self.bytes -= len(value)

    async def aclose(self) -> None:
        self._entries.clear()
        self.bytes = 0


class RedisStore:
    """Answers under ``{prefix}{key}`` with Redis's own expiry; every replica sees them."""

    def __init__(
        self,
        url: str,
        prefix: str,
        ttl: float,
        timeout: float,
        *,
        pool_size: int = 100,
        pool_timeout: float = 5.0,
    ) -> None:
        self.prefix = prefix
        self.ttl_ms = max(1, int(ttl * 1000))
        # A burst waits for a pooled connection (bounded) rather than reading as an outage.
        self._redis = blocking_client(
            url, timeout=timeout, pool_size=pool_size, pool_timeout=pool_timeout, retries=0
        )
        self._failing = False

    async def get(self, key: str) -> bytes | None:
        try:
            value = await self._redis.get(self.prefix + key)
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return None
        self._ok()
        return value if isinstance(value, bytes) else None

    async def put(self, key: str, value: bytes) -> None:
        try:
            await self._redis.set(self.prefix + key, value, px=self.ttl_ms)
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return
        self._ok()

    def _failed(self, exc: BaseException) -> None:
        if not self._failing:
            self._failing = True
            logger.warning("the cache's Redis is unreachable; serving without it (%r)", exc)

    def _ok(self) -> None:
        if self._failing:
            self._failing = False
            logger.warning("the cache's Redis is reachable again")

    async def aclose(self) -> None:
        await self._redis.aclose()
