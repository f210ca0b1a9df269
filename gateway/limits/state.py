"""The shared state behind per-key limits, and the one operation that must be atomic.

Admission is a single all-or-nothing step (:meth:`LimitStore.claim`): every configured limit is
checked and, only when all pass, all are charged together. Checking limits one by one and rolling
back on a later refusal would let concurrent requests see each other's half-taken charges, and
a refused request would briefly consume capacity it never used.

Counting schemes (the same in both stores, all times in integer epoch milliseconds):

- **requests per minute**: a sliding-window log. Every admitted request leaves one entry stamped
  with its time; a request is admitted while fewer than ``rpm`` entries are younger than 60 s.
  The count is exact; an entry stops counting exactly 60 s after its request.
- **tokens per minute**: a sliding window of 1-second buckets. Each admitted request adds its
  estimated tokens to the bucket of its second; the window is the current second and the 59
  before it. Counts are exact; window edges move in whole seconds.
- **concurrency**: leases. Each admitted request holds a lease that expires at ``lease_until_ms``
  unless renewed; expired leases are swept before every count, so a crashed process frees its
  slots once its leases run out.
- **budgets**: one token counter per UTC calendar day and per UTC calendar month.

Times come from the caller, so replicas must keep their clocks in sync (NTP); a skew of a few
milliseconds only shifts window edges by as much.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Protocol

WINDOW_MS = 60_000
"""Length of the requests and tokens windows."""

BUCKET_MS = 1_000
"""Granularity of the tokens window."""

Refusal = Literal["requests", "tokens", "day", "month", "concurrency"]
"""Which limit refused a claim, in the order they are checked."""


class StoreUnavailable(Exception):
    """The shared state cannot be reached (connection refused, timeout, server error)."""


@dataclass(frozen=True, slots=True)
class Quota:
    """The limits of one key; ``None`` means unlimited."""

    rpm: int | None = None
    tpm: int | None = None
    daily_tokens: int | None = None
    monthly_tokens: int | None = None
    max_concurrent: int | None = None

    @property
    def unlimited(self) -> bool:
        return (
            self.rpm is None
            and self.tpm is None
            and self.daily_tokens is None
            and self.monthly_tokens is None
            and self.max_concurrent is None
        )


@dataclass(frozen=True, slots=True)
class Period:
    """A UTC calendar period a budget counts over, named like ``2024-05-01`` or ``2024-05``."""

    name: str
    ends_ms: int


@dataclass(frozen=True, slots=True)
class Claim:
    """One request's charge on a key's state; the same object later settles it."""

    key: str
    claim_id: str
    tokens: int
    now_ms: int
    quota: Quota
    day: Period
    month: Period
    lease_until_ms: int

    @property
    def bucket(self) -> int:
        """The tokens-window bucket (epoch second) this claim was counted in."""
        return self.now_ms // BUCKET_MS


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of a claim and the window state the rate-limit headers describe.

    ``requests_used`` and ``tokens_used`` include this claim when it was admitted. The
    ``*_reset_ms`` fields say how long until the window is empty again; ``retry_after_ms`` how
    long until the refusing window could take this claim (``None`` when admitted, or when it
    never could).
    """

    refused: Refusal | None
    retry_after_ms: int | None
    requests_used: int = 0
    requests_reset_ms: int = 0
    tokens_used: int = 0
    tokens_reset_ms: int = 0


class LimitStore(Protocol):
    """Where the counters live: one process's memory, or Redis shared by all replicas."""

    async def claim(self, claim: Claim) -> Verdict:
        """Check every limit in ``claim.quota``; charge them all only if all pass."""
        ...

    async def settle(self, claim: Claim, actual_tokens: int, now_ms: int) -> None:
        """Free the claim's lease and correct its token charges by ``actual - estimated``.

        Corrections go to the bucket and periods the claim was charged in, and are skipped when
        those have already left the window. Not idempotent: callers settle once.
        """
        ...

    async def renew(self, claims: Iterable[Claim], now_ms: int, until_ms: int) -> None:
        """Extend the leases of live claims (ones already settled or expired stay gone)."""
        ...

    async def set_budgets(
        self,
        key: str,
        now_ms: int,
        day: tuple[Period, int | None],
        month: tuple[Period, int | None],
    ) -> None:
        """Set ``key``'s tokens used in the day and month periods (``None``: leave it)."""
        ...

    async def close(self) -> None: ...


def day_period(now_ms: int) -> Period:
    """The UTC calendar day containing ``now_ms``."""
    day_ms = 86_400_000
    start = now_ms - now_ms % day_ms
    name = datetime.fromtimestamp(start / 1000, UTC).strftime("%Y-%m-%d")
    return Period(name, start + day_ms)


def month_period(now_ms: int) -> Period:
    """The UTC calendar month containing ``now_ms``."""
    moment = datetime.fromtimestamp(now_ms / 1000, UTC)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    ends = calendar.timegm((year, month, 1, 0, 0, 0)) * 1000
    return Period(moment.strftime("%Y-%m"), ends)
