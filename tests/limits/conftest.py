"""Fixtures for the limits tests: an injectable clock, Redis access, a breakable TCP proxy."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis
from limits_support import REDIS_URL, FakeClock, StoreFactory, TcpProxy

from gateway.limits import Limiter, MemoryStore
from gateway.limits.redis import RedisStore

needs_redis = pytest.mark.skipif(
    not REDIS_URL, reason="set REDIS_URL (e.g. redis://127.0.0.1:6379/0) to test against Redis"
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2024, 3, 10, 12, 0, 0, tzinfo=UTC))


@pytest.fixture
def prefix() -> str:
    return f"gateway-test:{uuid.uuid4().hex[:12]}:"


@pytest.fixture
async def redis_cleanup(prefix: str) -> AsyncIterator[None]:
    """Delete this test's keys afterwards."""
    yield
    if not REDIS_URL:
        return
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture(params=["memory", pytest.param("redis", marks=needs_redis)])
def store_factory(request: pytest.FixtureRequest, prefix: str, redis_cleanup: None) -> StoreFactory:
    """Makes stores sharing one state: one MemoryStore, or RedisStores on one prefix."""
    if request.param == "memory":
        shared = MemoryStore()
        return lambda: shared
    assert REDIS_URL is not None
    return lambda: RedisStore(REDIS_URL, prefix=prefix, timeout=2.0)


@pytest.fixture
async def limiter(store_factory: StoreFactory, clock: FakeClock) -> AsyncIterator[Limiter]:
    limiter = Limiter(store_factory(), clock=clock, lease_seconds=30.0)
    yield limiter
    await limiter.close()


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    assert REDIS_URL is not None
    parts = urlsplit(REDIS_URL)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 6379)
    await proxy.start()
    yield proxy
    with contextlib.suppress(Exception):
        await proxy.stop()
