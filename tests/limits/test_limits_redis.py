"""The Redis store against a real Redis: replicas racing, crashes, outages and recovery."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from limits_support import REDIS_URL, FakeClock, TcpProxy, make_key

from gateway.config import Settings
from gateway.errors import RateLimited, ServiceUnavailable
from gateway.limits import Admission, Limiter
from gateway.limits.redis import RedisStore

pytestmark = [
    pytest.mark.skipif(
        not REDIS_URL, reason="set REDIS_URL (e.g. redis://127.0.0.1:6379/0) to test against Redis"
    ),
    pytest.mark.usefixtures("redis_cleanup"),
]


@pytest.fixture
async def replicas(prefix: str) -> AsyncIterator[list[Limiter]]:
    """Four limiters with their own connection pools on one Redis, like four gateway replicas."""
    assert REDIS_URL is not None
    limiters = [Limiter(RedisStore(REDIS_URL, prefix=prefix, timeout=5.0)) for _ in range(4)]
    yield limiters
    for limiter in limiters:
        await limiter.close()


async def try_admit(limiter: Limiter, rpm: int) -> Admission | None:
    try:
        return await limiter.admit(make_key("burst", rpm=rpm, tpm=10**6), "m", 7)
    except RateLimited:
        return None


async def test_burst_across_replicas_admits_exactly_the_limit(replicas: list[Limiter]) -> None:
    results = await asyncio.gather(*(try_admit(replicas[i % 4], 25) for i in range(200)))
    admitted = [r for r in results if r is not None]
    assert len(admitted) == 25
    remaining = sorted(int(a.headers["x-ratelimit-remaining-requests"]) for a in admitted)
    assert remaining == list(range(25))  # each admission saw a distinct count
    assert min(int(a.headers["x-ratelimit-remaining-tokens"]) for a in admitted) == 10**6 - 175


async def test_concurrency_across_replicas(replicas: list[Limiter]) -> None:
    key = make_key("busy", max_concurrent=3)

    async def attempt(limiter: Limiter) -> Admission | None:
        try:
            return await limiter.admit(key, "m", 0)
        except RateLimited:
            return None

    results = await asyncio.gather(*(attempt(replicas[i % 4]) for i in range(40)))
    held = [r for r in results if r is not None]
    assert len(held) == 3
    await held[0].release(0)
    results = await asyncio.gather(*(attempt(replicas[i % 4]) for i in range(10)))
    assert sum(r is not None for r in results) == 1


async def test_slots_of_a_crashed_replica_expire(prefix: str) -> None:
    assert REDIS_URL is not None
    clock = FakeClock.at("2024-06-01T10:00:00Z")
    key = make_key("crashy", max_concurrent=1)
    crashed = Limiter(RedisStore(REDIS_URL, prefix=prefix), clock=clock, lease_seconds=30)
    alive = Limiter(RedisStore(REDIS_URL, prefix=prefix), clock=clock, lease_seconds=30)
    try:
        await crashed.admit(key, "m", 0)
        await crashed.close()  # gone without releasing: nothing renews its lease
        clock.advance(29)
        with pytest.raises(RateLimited):
            await alive.admit(key, "m", 0)
        clock.advance(1)
        admission = await alive.admit(key, "m", 0)
        clock.advance(25)
        await alive.renew_leases()
        clock.advance(25)  # past the first expiry; the renewal keeps it held
        with pytest.raises(RateLimited):
            await alive.admit(key, "m", 0)
        await admission.release(0)
        await (await alive.admit(key, "m", 0)).release(0)
    finally:
        await alive.close()


async def test_burst_from_separate_processes_admits_exactly_the_limit(prefix: str) -> None:
    """Three OS processes, each a limiter firing 30 admissions at once, share rpm=20."""
    script = textwrap.dedent(
        """
        import asyncio, sys
        from gateway.config import KeySettings
        from gateway.errors import RateLimited
        from gateway.limits import Limiter
        from gateway.limits.redis import RedisStore

        async def main(url, prefix):
            limiter = Limiter(RedisStore(url, prefix=prefix, timeout=10.0))
            key = KeySettings(name="multi", key="sk-test-0123456789", upstream_token="u", rpm=20)
            async def one():
                try:
                    await limiter.admit(key, "m", 1)
                    return 1
                except RateLimited:
                    return 0
            await limiter.store.ping()  # connect before the start signal
            print("ready", flush=True)
            sys.stdin.readline()
            print(sum(await asyncio.gather(*(one() for _ in range(30)))), flush=True)
            await limiter.close()

        asyncio.run(main(sys.argv[1], sys.argv[2]))
        """
    )
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            script,
            REDIS_URL or "",
            prefix,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ},
        )
        for _ in range(3)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert (await asyncio.wait_for(proc.stdout.readline(), 60)).strip() == b"ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
        counts = []
        for proc in procs:
            out, _ = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 0
            counts.append(int(out.strip()))
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert sum(counts) == 20


# --- outages -------------------------------------------------------------------------------------


def limiter_through(proxy: TcpProxy, prefix: str, policy: str, events: list[bool]) -> Limiter:
    assert REDIS_URL is not None
    settings = Settings.model_validate(
        {
            "redis": {
                "url": proxy.url(REDIS_URL),
                "prefix": prefix,
                "failure_policy": policy,
                "timeout": 0.3,
            }
        }
    )
    limiter = Limiter.from_settings(settings, on_degraded=events.append)
    limiter.probe_interval = 0.0  # probe on every request, so recovery shows at once
    return limiter


async def test_fail_open_admits_by_this_processs_counters_during_outage_and_recovers(
    proxy: TcpProxy, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Open, not unlimited: while Redis is away each process keeps the key's limits by itself
    (N processes admit at most N times them); a key could otherwise take everything."""
    events: list[bool] = []
    limiter = limiter_through(proxy, prefix, "open", events)
    key = make_key("outage", rpm=2, max_concurrent=5)
    try:
        first = await limiter.admit(key, "m", 0)
        assert first.headers["x-ratelimit-remaining-requests"] == "1"
        await proxy.stop()
        with caplog.at_level(logging.WARNING, logger="gateway.limits"):
            during = [await limiter.admit(key, "m", 0) for _ in range(2)]
            with pytest.raises(RateLimited):  # this process's own count of the minute: 2
                await limiter.admit(key, "m", 0)
        assert all(a.degraded for a in during)
        assert [a.headers["x-ratelimit-remaining-requests"] for a in during] == ["1", "0"]
        assert limiter.degraded
        assert events == [True]
        warnings = [r for r in caplog.records if "unavailable" in r.getMessage()]
        assert len(warnings) == 1  # once per outage, not per request
        assert "failure_policy=open" in warnings[0].getMessage()
        await first.release(0)  # a release during the outage does not raise
        for admission in during:
            await admission.release(0)

        await proxy.start()
        second = await limiter.admit(key, "m", 0)  # limits hold again, with the old count
        assert not second.degraded
        assert not limiter.degraded
        assert events == [True, False]
        assert second.headers["x-ratelimit-remaining-requests"] == "0"
        with pytest.raises(RateLimited):
            await limiter.admit(key, "m", 0)
    finally:
        await limiter.close()


async def test_during_an_outage_a_process_holds_and_frees_concurrency_by_itself(
    proxy: TcpProxy, prefix: str
) -> None:
    limiter = limiter_through(proxy, prefix, "open", [])
    key = make_key("outage-conc", max_concurrent=1)
    try:
        await proxy.stop()
        held = await limiter.admit(key, "m", 0)
        assert held.degraded
        with pytest.raises(RateLimited):  # the one place is taken, here
            await limiter.admit(key, "m", 0)
        await limiter.renew_leases()  # renewed in this process's counters, not failing
        await held.release(0)
        again = await limiter.admit(key, "m", 0)  # freed here at once
        await again.release(0)
    finally:
        await limiter.close()


async def test_fail_closed_refuses_during_outage_and_recovers(proxy: TcpProxy, prefix: str) -> None:
    events: list[bool] = []
    limiter = limiter_through(proxy, prefix, "closed", events)
    key = make_key("outage", rpm=10)
    try:
        await limiter.admit(key, "m", 0)
        await proxy.stop()
        for _ in range(3):
            with pytest.raises(ServiceUnavailable) as info:
                await limiter.admit(key, "m", 0)
            assert info.value.status_code == 503
            assert info.value.code == "limits_unavailable"
        assert events == [True]
        await proxy.start()
        admission = await limiter.admit(key, "m", 0)
        assert admission.headers["x-ratelimit-remaining-requests"] == "8"
        assert events == [True, False]
    finally:
        await limiter.close()


async def test_timeout_counts_as_outage(proxy: TcpProxy, prefix: str) -> None:
    events: list[bool] = []
    limiter = limiter_through(proxy, prefix, "closed", events)
    key = make_key("slow", rpm=10)
    try:
        await limiter.admit(key, "m", 0)
        proxy.blackhole = True  # connections stay open, answers never come
        with pytest.raises(ServiceUnavailable):
            await limiter.admit(key, "m", 0)
        assert limiter.degraded
        proxy.blackhole = False
        await proxy.stop()  # cut the stuck connections
        await proxy.start()
        await limiter.admit(key, "m", 0)
        assert not limiter.degraded
    finally:
        await limiter.close()


async def test_requests_between_probes_skip_the_store(proxy: TcpProxy, prefix: str) -> None:
    events: list[bool] = []
    limiter = limiter_through(proxy, prefix, "closed", events)
    limiter.probe_interval = 3600.0
    key = make_key("skip", rpm=10)
    try:
        await proxy.stop()
        with pytest.raises(ServiceUnavailable):
            await limiter.admit(key, "m", 0)
        await proxy.start()
        # Redis is back, but the next probe is an hour away: the policy applies without trying.
        with pytest.raises(ServiceUnavailable):
            await limiter.admit(key, "m", 0)
        limiter.probe_interval = 0.0
        limiter._next_probe = 0.0
        await limiter.admit(key, "m", 0)
    finally:
        await limiter.close()


async def test_keys_live_under_the_prefix_and_expire(prefix: str) -> None:
    assert REDIS_URL is not None
    limiter = Limiter(RedisStore(REDIS_URL, prefix=prefix))
    key = make_key("ttl", rpm=5, tpm=100, daily_tokens=1000, monthly_tokens=5000, max_concurrent=2)
    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        await limiter.admit(key, "m", 10)
        names = sorted([k async for k in client.scan_iter(match=prefix + "*")])
        assert len(names) == 5
        assert all(n.startswith(prefix + "{ttl}:") for n in names)
        for name in names:
            assert await client.pttl(name) > 0
    finally:
        await client.aclose()
        await limiter.close()
