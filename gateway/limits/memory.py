"""Limit state in this process's memory: right for one process, wrong for several replicas.

Every method runs without awaiting anything, so on one event loop each is atomic without locks.
The schemes are those documented in :mod:`gateway.limits.state`, step for step like the Redis
scripts, so both stores answer the same claims the same way.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field

from gateway.limits.state import BUCKET_MS, WINDOW_MS, Claim, Period, Refusal, Verdict

_BUCKETS = WINDOW_MS // BUCKET_MS


@dataclass
class _KeyState:
    requests: list[tuple[int, str]] = field(default_factory=list)  # (time_ms, claim_id), sorted
    tokens: dict[int, int] = field(default_factory=dict)  # bucket second -> tokens
    leases: dict[str, int] = field(default_factory=dict)  # claim_id -> expires_ms
    day: tuple[str, int] = ("", 0)  # (period name, tokens used)
    month: tuple[str, int] = ("", 0)

    def sweep(self, now_ms: int) -> None:
        cut = bisect.bisect_right(self.requests, (now_ms - WINDOW_MS, "\U0010ffff"))
        del self.requests[:cut]
        oldest = now_ms // BUCKET_MS - _BUCKETS
        for second in [s for s in self.tokens if s <= oldest]:
            del self.tokens[second]
        for claim_id in [c for c, until in self.leases.items() if until <= now_ms]:
            del self.leases[claim_id]


class MemoryStore:
    """A :class:`~gateway.limits.state.LimitStore` in a dict, keyed by key name."""

    def __init__(self) -> None:
        self._keys: dict[str, _KeyState] = {}

    async def claim(self, claim: Claim) -> Verdict:
        return self.claim_now(claim)

    async def set_budgets(
        self,
        key: str,
        now_ms: int,
        day: tuple[Period, int | None],
        month: tuple[Period, int | None],
    ) -> None:
        self.set_budgets_now(key, day, month)

    def set_budgets_now(
        self, key: str, day: tuple[Period, int | None], month: tuple[Period, int | None]
    ) -> None:
        """:meth:`set_budgets`, synchronously."""
        state = self._keys.setdefault(key, _KeyState())
        if day[1] is not None:
            state.day = (day[0].name, day[1])
        if month[1] is not None:
            state.month = (month[0].name, month[1])

    def claim_now(self, claim: Claim) -> Verdict:
        """:meth:`claim`, synchronously (the whole check-and-charge in one step)."""
        state = self._keys.setdefault(claim.key, _KeyState())
        now, quota, tokens = claim.now_ms, claim.quota, claim.tokens
        state.sweep(now)
        refused: Refusal | None = None
        retry: int | None = None

        requests_used = len(state.requests)
        if quota.rpm is not None and requests_used >= quota.rpm:
            freeing = state.requests[requests_used - quota.rpm][0]
            refused, retry = "requests", freeing + WINDOW_MS - now

        tokens_used = sum(state.tokens.values())
        if refused is None and quota.tpm is not None and tokens_used + tokens > quota.tpm:
            refused, retry = (
                "tokens",
                _tokens_retry(state.tokens, tokens_used, tokens, quota.tpm, now),
            )

        day_used = state.day[1] if state.day[0] == claim.day.name else 0
        daily = quota.daily_tokens
        if refused is None and daily is not None and day_used + tokens > daily:
            refused = "day"
        month_used = state.month[1] if state.month[0] == claim.month.name else 0
        monthly = quota.monthly_tokens
        if refused is None and monthly is not None and month_used + tokens > monthly:
            refused = "month"

        most = quota.max_concurrent
        if refused is None and most is not None and len(state.leases) >= most:
            refused = "concurrency"

        if refused is None:
            if quota.rpm is not None:
                bisect.insort(state.requests, (now, claim.claim_id))
                requests_used += 1
            if quota.tpm is not None:
                state.tokens[claim.bucket] = state.tokens.get(claim.bucket, 0) + tokens
                tokens_used += tokens
            if quota.daily_tokens is not None:
                state.day = (claim.day.name, day_used + tokens)
            if quota.monthly_tokens is not None:
                state.month = (claim.month.name, month_used + tokens)
            if quota.max_concurrent is not None:
                state.leases[claim.claim_id] = claim.lease_until_ms

        return Verdict(
            refused=refused,
            retry_after_ms=retry,
            requests_used=requests_used if quota.rpm is not None else 0,
            requests_reset_ms=(
                state.requests[-1][0] + WINDOW_MS - now
                if quota.rpm is not None and state.requests
                else 0
            ),
            tokens_used=tokens_used if quota.tpm is not None else 0,
            tokens_reset_ms=(
                (max(state.tokens) + _BUCKETS) * BUCKET_MS - now
                if quota.tpm is not None and state.tokens
                else 0
            ),
        )

    async def settle(self, claim: Claim, actual_tokens: int, now_ms: int) -> None:
        state = self._keys.get(claim.key)
        if state is None:
            return
        state.leases.pop(claim.claim_id, None)
        delta = actual_tokens - claim.tokens
        if delta == 0:
            return
        quota = claim.quota
        bucket = claim.bucket
        in_window = bucket > now_ms // BUCKET_MS - _BUCKETS
        if quota.tpm is not None and in_window and bucket in state.tokens:
            state.tokens[bucket] = max(0, state.tokens[bucket] + delta)
        if quota.daily_tokens is not None and state.day[0] == claim.day.name:
            state.day = (state.day[0], max(0, state.day[1] + delta))
        if quota.monthly_tokens is not None and state.month[0] == claim.month.name:
            state.month = (state.month[0], max(0, state.month[1] + delta))

    async def renew(self, claims: Iterable[Claim], now_ms: int, until_ms: int) -> None:
        for claim in claims:
            state = self._keys.get(claim.key)
            if state is not None and claim.claim_id in state.leases:
                state.leases[claim.claim_id] = max(state.leases[claim.claim_id], until_ms)

    async def close(self) -> None:
        self._keys.clear()


def _tokens_retry(
    buckets: dict[int, int], used: int, tokens: int, limit: int, now: int
) -> int | None:
    """Milliseconds until enough old buckets leave the window; ``None`` if they never could."""
    if tokens > limit:
        return None
    need = used + tokens - limit
    for second in sorted(buckets):
        need -= buckets[second]
        if need <= 0:
            return (second + _BUCKETS) * BUCKET_MS - now
    return None
