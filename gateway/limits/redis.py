"""Limit state in Redis, shared by every replica.

Each operation is one Lua script (registered once, run by ``EVALSHA``), so a claim's check and
charge happen atomically on the server however many replicas race. The schemes are those
documented in :mod:`gateway.limits.state`. A key's entries share one hash tag, so the scripts
also work on Redis Cluster::

    {prefix}{<key name>}:rpm              sorted set: claim id scored by request time (ms)
    {prefix}{<key name>}:tpm              hash: epoch second -> tokens
    {prefix}{<key name>}:day:2024-05-01   string: tokens used that UTC day
    {prefix}{<key name>}:month:2024-05    string: tokens used that UTC month
    {prefix}{<key name>}:conc             sorted set: claim id scored by lease expiry (ms)

Every failure to get an answer (refused connection, timeout, an error reply) becomes
:class:`~gateway.limits.state.StoreUnavailable`; what to do then is the limiter's policy.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Iterable
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from gateway.limits.state import Claim, Period, Refusal, StoreUnavailable, Verdict

_REFUSALS: dict[int, Refusal] = {
    1: "requests",
    2: "tokens",
    3: "day",
    4: "month",
    5: "concurrency",
}

# KEYS: rpm, tpm, day, month, conc
# ARGV: now_ms, claim_id, tokens, rpm, tpm, daily, monthly, max_concurrent (0 = unlimited),
#       lease_until_ms, day_ttl_ms, month_ttl_ms
# Returns: {refusal (0 = admitted), retry_ms (-1 = none), requests_used, requests_reset_ms,
#           tokens_used, tokens_reset_ms}
_CLAIM = """
local now = tonumber(ARGV[1])
local id = ARGV[2]
local tokens = tonumber(ARGV[3])
local rpm, tpm = tonumber(ARGV[4]), tonumber(ARGV[5])
local daily, monthly = tonumber(ARGV[6]), tonumber(ARGV[7])
local max_conc = tonumber(ARGV[8])
local window = 60000
local now_s = math.floor(now / 1000)
local refused, retry = 0, -1

local r_used = 0
if rpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
  r_used = redis.call('ZCARD', KEYS[1])
  if r_used >= rpm then
    local e = redis.call('ZRANGE', KEYS[1], r_used - rpm, r_used - rpm, 'WITHSCORES')
    refused, retry = 1, tonumber(e[2]) + window - now
  end
end

local t_used, secs, amounts = 0, {}, {}
if tpm > 0 then
  local flat = redis.call('HGETALL', KEYS[2])
  local stale = {}
  for i = 1, #flat, 2 do
    local s, n = tonumber(flat[i]), tonumber(flat[i + 1])
    if s <= now_s - 60 then
      stale[#stale + 1] = flat[i]
    else
      secs[#secs + 1] = s
      amounts[s] = n
      t_used = t_used + n
    end
  end
  if #stale > 0 then redis.call('HDEL', KEYS[2], unpack(stale)) end
  table.sort(secs)
  if refused == 0 and t_used + tokens > tpm then
    refused = 2
    if tokens <= tpm then
      local need = t_used + tokens - tpm
      for _, s in ipairs(secs) do
        need = need - amounts[s]
        if need <= 0 then
          retry = (s + 60) * 1000 - now
          break
        end
      end
    end
  end
end

local d_used, m_used = 0, 0
if daily > 0 then
  d_used = tonumber(redis.call('GET', KEYS[3]) or '0')
  if refused == 0 and d_used + tokens > daily then refused = 3 end
end
if monthly > 0 then
  m_used = tonumber(redis.call('GET', KEYS[4]) or '0')
  if refused == 0 and m_used + tokens > monthly then refused = 4 end
end

if max_conc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)
  if refused == 0 and redis.call('ZCARD', KEYS[5]) >= max_conc then refused = 5 end
end

if refused == 0 then
  if rpm > 0 then
    redis.call('ZADD', KEYS[1], now, id)
    redis.call('PEXPIRE', KEYS[1], window)
    r_used = r_used + 1
  end
  if tpm > 0 then
    redis.call('HINCRBY', KEYS[2], now_s, tokens)
    redis.call('PEXPIRE', KEYS[2], window + 1000)
    if amounts[now_s] == nil then secs[#secs + 1] = now_s end
    t_used = t_used + tokens
  end
  if daily > 0 then
    redis.call('INCRBY', KEYS[3], tokens)
    redis.call('PEXPIRE', KEYS[3], tonumber(ARGV[10]))
  end
  if monthly > 0 then
    redis.call('INCRBY', KEYS[4], tokens)
    redis.call('PEXPIRE', KEYS[4], tonumber(ARGV[11]))
  end
  if max_conc > 0 then
    local lease_until = tonumber(ARGV[9])
    redis.call('ZADD', KEYS[5], lease_until, id)
    if redis.call('PTTL', KEYS[5]) < lease_until - now + window then
      redis.call('PEXPIRE', KEYS[5], lease_until - now + window)
    end
  end
end

local r_reset, t_reset = 0, 0
if rpm > 0 and r_used > 0 then
  local newest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  r_reset = tonumber(newest[2]) + window - now
end
if tpm > 0 and #secs > 0 then
  local newest = secs[1]
  for _, s in ipairs(secs) do if s > newest then newest = s end end
  t_reset = (newest + 60) * 1000 - now
end
return {refused, retry, r_used, r_reset, t_used, t_reset}
"""

# KEYS: tpm, day, month, conc
# ARGV: claim_id, delta, bucket_second, now_ms, use_tpm, use_day, use_month, use_conc (1/0)
_SETTLE = """
if ARGV[8] == '1' then redis.call('ZREM', KEYS[4], ARGV[1]) end
local delta = tonumber(ARGV[2])
if delta == 0 then return 0 end
local bucket = ARGV[3]
if ARGV[5] == '1' and tonumber(bucket) > math.floor(tonumber(ARGV[4]) / 1000) - 60
    and redis.call('HEXISTS', KEYS[1], bucket) == 1 then
  if redis.call('HINCRBY', KEYS[1], bucket, delta) < 0 then
    redis.call('HSET', KEYS[1], bucket, 0)
  end
end
for i, flag in ipairs({ARGV[6], ARGV[7]}) do
  local key = KEYS[i + 1]
  if flag == '1' and redis.call('EXISTS', key) == 1 then
    if redis.call('INCRBY', key, delta) < 0 then redis.call('SET', key, 0, 'KEEPTTL') end
  end
end
return 1
"""

# KEYS: conc; ARGV: until_ms, now_ms, claim ids...
_RENEW = """
local expiry = tonumber(ARGV[1])
for i = 3, #ARGV do redis.call('ZADD', KEYS[1], 'XX', 'GT', expiry, ARGV[i]) end
local ttl = expiry - tonumber(ARGV[2]) + 60000
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
"""


def blocking_client(
    url: str, *, timeout: float, pool_size: int, pool_timeout: float, retries: int
) -> aioredis.Redis:
    """A client whose pool makes a burst wait for a connection instead of failing at once.

    redis-py's default pool raises as soon as its connections are all in use, which a limiter
    would read as "Redis is down" under any burst; a blocking pool of ``pool_size`` lets a call
    wait up to ``pool_timeout`` seconds for a free connection. ``timeout`` bounds each socket
    operation, connecting included. ``retries`` re-sends, without delay, on a fresh connection
    after a pooled one died (Redis restarted).
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=pool_size,
        timeout=pool_timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), retries),
    )
    return aioredis.Redis.from_pool(pool)


class RedisStore:
    """A :class:`~gateway.limits.state.LimitStore` in Redis.

    ``timeout`` bounds every operation, connecting included, and ``pool_timeout`` the wait for
    one of the ``pool_size`` connections; past them the store reports
    :class:`StoreUnavailable` rather than holding the request. A burst waits its turn, so only
    a Redis that does not answer counts as an outage.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "gateway:",
        timeout: float = 0.5,
        pool_size: int = 100,
        pool_timeout: float = 5.0,
    ) -> None:
        self.prefix = prefix
        # The whole call: a connection's wait, then the operation and its one retry.
        self._timeout = pool_timeout + 2 * timeout
        self._client = blocking_client(
            url, timeout=timeout, pool_size=pool_size, pool_timeout=pool_timeout, retries=1
        )
        self._claim = self._client.register_script(_CLAIM)
        self._settle = self._client.register_script(_SETTLE)
        self._renew = self._client.register_script(_RENEW)

    def keys_for(self, claim: Claim) -> list[str]:
        """The Redis keys of ``claim``: rpm, tpm, day, month, conc."""
        base = f"{self.prefix}{{{claim.key}}}:"
        return [
            base + "rpm",
            base + "tpm",
            f"{base}day:{claim.day.name}",
            f"{base}month:{claim.month.name}",
            base + "conc",
        ]

    async def claim(self, claim: Claim) -> Verdict:
        quota, now = claim.quota, claim.now_ms
        args: list[str | int] = [
            now,
            claim.claim_id,
            claim.tokens,
            quota.rpm or 0,
            quota.tpm or 0,
            quota.daily_tokens or 0,
            quota.monthly_tokens or 0,
            quota.max_concurrent or 0,
            claim.lease_until_ms,
            claim.day.ends_ms - now + 3_600_000,
            claim.month.ends_ms - now + 3_600_000,
        ]
        reply = await self._run(self._claim(keys=self.keys_for(claim), args=args))
        refused, retry, r_used, r_reset, t_used, t_reset = (int(x) for x in reply)
        return Verdict(
            refused=_REFUSALS.get(refused),
            retry_after_ms=retry if retry >= 0 else None,
            requests_used=r_used,
            requests_reset_ms=r_reset,
            tokens_used=t_used,
            tokens_reset_ms=t_reset,
        )

    async def settle(self, claim: Claim, actual_tokens: int, now_ms: int) -> None:
        quota = claim.quota
        counted = (quota.tpm, quota.daily_tokens, quota.monthly_tokens)
        corrects = actual_tokens != claim.tokens and any(c is not None for c in counted)
        if quota.max_concurrent is None and not corrects:
            return  # nothing to free or correct: save the round trip
        flags = [*counted, quota.max_concurrent]
        args: list[str | int] = [
            claim.claim_id,
            actual_tokens - claim.tokens,
            claim.bucket,
            now_ms,
            *("1" if f is not None else "0" for f in flags),
        ]
        await self._run(self._settle(keys=self.keys_for(claim)[1:], args=args))

    async def renew(self, claims: Iterable[Claim], now_ms: int, until_ms: int) -> None:
        by_key: dict[str, list[Claim]] = defaultdict(list)
        for claim in claims:
            if claim.quota.max_concurrent is not None:
                by_key[claim.key].append(claim)
        for group in by_key.values():
            args: list[str | int] = [until_ms, now_ms, *(c.claim_id for c in group)]
            await self._run(self._renew(keys=[self.keys_for(group[0])[4]], args=args))

    async def set_budgets(
        self,
        key: str,
        now_ms: int,
        day: tuple[Period, int | None],
        month: tuple[Period, int | None],
    ) -> None:
        base = f"{self.prefix}{{{key}}}:"
        for kind, (period, tokens) in (("day", day), ("month", month)):
            if tokens is not None:
                ttl = period.ends_ms - now_ms + 3_600_000
                await self._run(self._client.set(f"{base}{kind}:{period.name}", tokens, px=ttl))

    async def ping(self) -> None:
        """Raise :class:`StoreUnavailable` unless Redis answers within the timeout."""
        await self._run(cast(Awaitable[Any], self._client.ping()))

    async def close(self) -> None:
        await self._client.aclose()

    async def _run(self, call: Awaitable[Any]) -> Any:
        try:
            async with asyncio.timeout(self._timeout):
                return await call
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc
