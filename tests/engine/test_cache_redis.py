"""The cache's Redis client under a burst: a full pool waits, it is not an outage (issue 23)."""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest
import redis

from gateway.engine.cache_stores import RedisStore

REDIS_URL = os.environ.get("REDIS_URL")
pytestmark = pytest.mark.skipif(not REDIS_URL, reason="set REDIS_URL to test the Redis cache")


async def test_a_burst_far_beyond_the_pool_is_served_not_failed() -> None:
    assert REDIS_URL
    prefix = f"gateway-test-cache:{uuid.uuid4().hex[:12]}:"
    store = RedisStore(REDIS_URL, prefix, ttl=60, timeout=2.0, pool_size=4, pool_timeout=10.0)
    try:
        await store.put("k", b"answer")
        answers = await asyncio.gather(*(store.get("k") for _ in range(400)))
        assert answers == [b"answer"] * 400  # a raising pool read as misses (and "unreachable")
        assert not store._failing
    finally:
        await store.aclose()
        client = redis.Redis.from_url(REDIS_URL)
        client.delete(*client.keys(prefix + "*") or ["-"])
        client.close()
