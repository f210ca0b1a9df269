"""Keeps the in-memory registry at the database's version, on every replica.

A change is announced twice: on Redis pub/sub (when ``redis.url`` is set) and, on PostgreSQL,
by ``NOTIFY`` in the changing transaction. Either wakes the watcher at once. Between
announcements it still reads the one-row version counter every ``key_store.poll_seconds``, so a
lost message (or a change made with the CLI while Redis was away) is picked up within that
time. When the database cannot be reached the registry keeps the keys it has, the watcher says
so (:attr:`KeyWatcher.healthy`, ``/readyz``, the ``gateway_keys_store_up`` metric), and it
keeps trying.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from gateway.db_postgres import listen
from gateway.keys.registry import KeyRegistry
from gateway.keys.store import KeyStore

logger = logging.getLogger("gateway.keys")

#: Longest a refresh may take before it counts as a failure (the first one loads every key).
REFRESH_TIMEOUT = 5.0
FIRST_LOAD_TIMEOUT = 60.0


def _raise_if_cancelling() -> None:
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def redis_channel(prefix: str) -> str:
    return f"{prefix}keys:changed"


class KeyWatcher:
    def __init__(
        self,
        store: KeyStore,
        registry: KeyRegistry,
        *,
        poll_seconds: float = 0.5,
        redis_url: str | None = None,
        redis_prefix: str = "gateway:",
        postgres_url: str | None = None,
        on_health: Callable[[bool], None] | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.poll_seconds = poll_seconds
        self.redis_url = redis_url
        self.channel = redis_channel(redis_prefix)
        self.postgres_url = postgres_url
        self.on_health = on_health
        self.healthy = False
        self._failed = False
        self._opened = False
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._redis: Any = None

    async def start(self) -> None:
        """Load every key now if the database answers; keep trying in the background if not."""
        with contextlib.suppress(Exception):  # logged by refresh; the loop retries
            await self.refresh()
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._run(), name="gateway-keys-refresh"))
        if self.redis_url:
            self._tasks.append(loop.create_task(self._listen_redis(), name="gateway-keys-redis"))
        if self.postgres_url:
            self._tasks.append(loop.create_task(self._listen_postgres(), name="gateway-keys-pg"))

    def poke(self) -> None:
        """Refresh now (a change was announced, or made here)."""
        self._wake.set()

    async def open(self) -> None:
        if not self._opened:
            async with asyncio.timeout(REFRESH_TIMEOUT):
                await self.store.open()
            self._opened = True

    async def refresh(self) -> None:
        try:
            await self.open()
            limit = REFRESH_TIMEOUT if self.registry.loaded else FIRST_LOAD_TIMEOUT
            async with asyncio.timeout(limit):
                changes = await self.store.changes(self.registry.version)
        except Exception as exc:
            self._health(False, exc)
            raise
        self.registry.apply(changes)
        self._health(True)

    def _health(self, healthy: bool, exc: BaseException | None = None) -> None:
        """Log each change of state once (not every poll while the database is away)."""
        if healthy and not self.healthy:
            log = logger.warning if self._failed else logger.info
            log("key database reachable: %d keys loaded", len(self.registry))
        elif not healthy and (self.healthy or not self._failed):
            self._failed = True
            logger.warning(
                "key database unreachable (%s: %s): serving the %d keys already loaded",
                type(exc).__name__,
                exc,
                len(self.registry),
            )
        self.healthy = healthy
        if self.on_health is not None:
            self.on_health(healthy)

    async def announce(self) -> None:
        """Tell the other replicas (best effort: they also poll)."""
        self.poke()
        if not self.redis_url:
            return
        try:
            client = await self._redis_client()
            async with asyncio.timeout(1.0):
                await client.publish(self.channel, str(self.registry.version))
        except Exception as exc:
            logger.warning("could not announce a key change on Redis: %s", exc)

    async def _redis_client(self) -> Any:
        if self._redis is None:
            import redis.asyncio as aioredis

            self._redis = aioredis.from_url(self.redis_url or "", socket_timeout=2.0)
        return self._redis

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_seconds):
                    await self._wake.wait()
            self._wake.clear()
            with contextlib.suppress(Exception):
                await self.refresh()

    async def _listen_redis(self) -> None:
        import redis.asyncio as aioredis

        while True:
            client = aioredis.from_url(self.redis_url or "")
            try:
                pubsub = client.pubsub()
                await pubsub.subscribe(self.channel)
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self.poke()
            except Exception as exc:
                _raise_if_cancelling()  # a client library may turn our cancellation into its error
                logger.debug("key change subscription lost: %s", exc)
            finally:
                with contextlib.suppress(Exception):
                    await client.aclose()
            await asyncio.sleep(1.0)

    async def _listen_postgres(self) -> None:
        assert self.postgres_url is not None
        while True:
            try:
                await listen(self.postgres_url, self.store.channel, self.poke)
            except Exception as exc:
                _raise_if_cancelling()
                logger.debug("key change LISTEN lost: %s", exc)
            await asyncio.sleep(1.0)

    async def aclose(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            # Bounded: a listener stuck in a client library must not hold up shutdown.
            await asyncio.wait(tasks, timeout=2.0)
        if self._redis is not None:
            with contextlib.suppress(Exception):
                await self._redis.aclose()
        with contextlib.suppress(Exception):
            await self.store.close()
