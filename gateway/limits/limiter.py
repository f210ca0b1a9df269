"""Per-key admission: who may call, which model, how often, how much, how many at once.

:meth:`Limiter.admit` checks, in order: disabled (403 ``key_disabled``), expired (403
``key_expired``; authentication refuses both first), model not allowed (403
``model_not_allowed``; the routes answer such a model with the 404 of an unknown one before
admission), then requests per minute, tokens per minute, daily budget, monthly budget and
concurrent requests (429), all in one atomic claim on the store, so a refused request consumes
nothing. An admitted request gets an :class:`Admission`; the caller releases it exactly once
(in a ``finally``) with the tokens actually used, which frees the concurrency slot and corrects
the token counts from the estimate.

If the store cannot be reached, ``failure_policy`` decides: ``open`` admits by this process's
own counters (a :class:`MemoryStore` beside the shared one: each process then enforces every
limit alone, so N processes admit at most N times a key's limits, where admitting without any
limit would let one key take everything), ``closed`` refuses with 503 ``limits_unavailable``.
The first failure logs a warning and flips :attr:`Limiter.degraded`; afterwards one request per
``probe_interval`` tries the store again (the others follow the policy at once, without waiting
for a timeout), and the first success ends the outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from gateway.auth import key_refusal
from gateway.config import KeySettings, Settings
from gateway.errors import PermissionDenied, RateLimited, ServiceUnavailable
from gateway.limits.headers import format_duration, rate_limit_headers
from gateway.limits.memory import MemoryStore
from gateway.limits.state import (
    Claim,
    LimitStore,
    Quota,
    StoreUnavailable,
    Verdict,
    day_period,
    month_period,
)

logger = logging.getLogger("gateway.limits")

FailurePolicy = Literal["open", "closed"]


#: Team counters live beside key counters; key names cannot start with this (see config).
TEAM_PREFIX = "team:"


@dataclass(frozen=True, slots=True)
class TeamLimits:
    """What a team's keys share: limits over all of them together, and allowed models."""

    name: str
    quota: Quota
    models: tuple[str, ...] | None = None


def quota_of(key: KeySettings) -> Quota:
    return Quota(
        rpm=key.rpm,
        tpm=key.tpm,
        daily_tokens=key.daily_tokens,
        monthly_tokens=key.monthly_tokens,
        max_concurrent=key.max_concurrent,
    )


class Admission:
    """An admitted request's hold on its key's limits.

    ``headers`` are the ``x-ratelimit-*`` headers to send with the answer (empty when the key has
    no rpm/tpm); ``degraded`` when admitted by this process's own counters during an outage.
    """

    def __init__(
        self,
        limiter: Limiter | None,
        claim: Claim | None,
        headers: dict[str, str],
        *,
        estimated_tokens: int,
        degraded: bool = False,
    ) -> None:
        self.headers = headers
        self.estimated_tokens = estimated_tokens
        #: Admitted by this process's own counters while the shared store was unreachable.
        self.degraded = degraded
        self._limiter = limiter
        self._claim = claim
        self._released = False
        #: The team's admission, released with this one.
        self.partner: Admission | None = None

    @property
    def claim(self) -> Claim | None:
        return self._claim

    @property
    def released(self) -> bool:
        return self._released

    async def release(self, actual_tokens: int) -> None:
        """Free the concurrency slot and correct token counts by ``actual - estimated``.

        Idempotent: only the first call counts. Never raises for store trouble (a lease the
        store missed expires by itself).
        """
        if self._released:
            return
        self._released = True
        if self._limiter is not None and self._claim is not None:
            await self._limiter._settle(self, self._claim, max(0, actual_tokens), self.degraded)
        if self.partner is not None:
            await self.partner.release(actual_tokens)


class Limiter:
    """Admits requests against per-key limits kept in a :class:`LimitStore`."""

    def __init__(
        self,
        store: LimitStore,
        *,
        failure_policy: FailurePolicy = "open",
        lease_seconds: float = 30.0,
        probe_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
        on_degraded: Callable[[bool], None] | None = None,
    ) -> None:
        self.store = store
        #: This process's own counters, for ``failure_policy: open`` while ``store`` is away.
        self.local = MemoryStore()
        self.failure_policy: FailurePolicy = failure_policy
        self.lease_seconds = lease_seconds
        self.probe_interval = probe_interval
        self.on_degraded = on_degraded
        self._clock = clock
        self._degraded = False
        self._next_probe = 0.0
        self._live: weakref.WeakSet[Admission] = weakref.WeakSet()
        self._renewer: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        on_degraded: Callable[[bool], None] | None = None,
    ) -> Limiter:
        """Redis when ``redis.url`` is set (shared by replicas), else this process's memory."""
        redis_settings = settings.redis
        store: LimitStore
        if redis_settings.url:
            from gateway.limits.redis import RedisStore

            store = RedisStore(
                redis_settings.url,
                prefix=redis_settings.prefix,
                timeout=redis_settings.timeout,
                pool_size=redis_settings.pool_size,
                pool_timeout=redis_settings.pool_timeout,
            )
        else:
            store = MemoryStore()
        return cls(
            store,
            failure_policy=redis_settings.failure_policy,
            lease_seconds=redis_settings.lease_seconds,
            probe_interval=redis_settings.probe_interval,
            clock=clock,
            on_degraded=on_degraded,
        )

    async def reconcile(
        self,
        budgets: Iterable[tuple[str, bool, bool]],
        day_usage: dict[str, int],
        month_usage: dict[str, int],
        now: float,
    ) -> None:
        """Set budget counters to what the ledger counted; called at start-up.

        ``budgets`` holds ``(counter, has a daily budget, has a monthly one)``: a key's name, or
        :data:`TEAM_PREFIX` + a team's; the usage maps hold tokens per counter this UTC day and
        month.
        """
        now_ms = round(now * 1000)
        day, month = day_period(now_ms), month_period(now_ms)
        for name, daily, monthly in budgets:
            tokens_today = day_usage.get(name, 0) if daily else None
            tokens_month = month_usage.get(name, 0) if monthly else None
            spent = (day, tokens_today), (month, tokens_month)
            self.local.set_budgets_now(name, *spent)  # what an outage starts from here
            await self.store.set_budgets(name, now_ms, *spent)

    @property
    def degraded(self) -> bool:
        """True while the store is unreachable and ``failure_policy`` applies."""
        return self._degraded

    async def admit(
        self,
        key: KeySettings,
        model: str,
        estimated_tokens: int,
        *,
        aliases: Iterable[str] = (),
        team: TeamLimits | None = None,
    ) -> Admission:
        """Admit one request of ``key`` for ``model`` or raise the refusal.

        A ``team``'s limits are claimed first, on counters its keys share; a request its key
        then refuses gives the team's tokens and concurrency back (its one request stays in the
        team's requests-per-minute window).

        ``estimated_tokens`` is the prompt's tokens plus the completion tokens expected
        (``max_tokens``); ``aliases`` are other names of the same model, any of which may
        appear in ``key.models``.
        """
        now = self._clock()
        refusal = key_refusal(key, now)  # authentication refused it already; kept for callers
        if refusal is not None:
            raise refusal
        allowed = key.models
        if allowed is not None and not any(n in allowed for n in (model, *aliases)):
            raise PermissionDenied(
                f"This API key may not use the model {model!r}.",
                code="model_not_allowed",
                param="model",
            )

        team_models = team.models if team is not None else None
        if team_models is not None and not any(n in team_models for n in (model, *aliases)):
            raise PermissionDenied(
                f"This API key's team may not use the model {model!r}.",
                code="model_not_allowed",
                param="model",
            )

        tokens = max(0, int(estimated_tokens))
        team_admission = None
        if team is not None and not team.quota.unlimited:
            team_admission = await self._admit_quota(
                TEAM_PREFIX + team.name, team.quota, tokens, now, f"team {team.name!r}"
            )
        try:
            admission = await self._admit_quota(key.name, quota_of(key), tokens, now, "key")
        except BaseException:
            if team_admission is not None:
                await team_admission.release(0)
            raise
        if team_admission is not None:
            admission.partner = team_admission
            if not admission.headers:
                admission.headers = team_admission.headers
        return admission

    async def charge(
        self, key: KeySettings, tokens: int, *, team: TeamLimits | None = None
    ) -> None:
        """Correct ``key``'s (and its ``team``'s) token counts by ``tokens`` (may be negative),
        with no admission: the end of work admitted elsewhere (a background run resumed after
        a restart, admitted by the gateway that started it, is corrected from its estimate)."""
        if tokens == 0:
            return
        now = self._clock()
        targets = [(key.name, quota_of(key))]
        if team is not None:
            targets.append((TEAM_PREFIX + team.name, team.quota))
        for name, quota in targets:
            if quota.unlimited:
                continue
            now_ms = round(now * 1000)
            claim = Claim(
                key=name,
                claim_id=uuid.uuid4().hex,
                tokens=max(0, -tokens),
                now_ms=now_ms,
                quota=Quota(quota.rpm, quota.tpm, quota.daily_tokens, quota.monthly_tokens),
                day=day_period(now_ms),
                month=month_period(now_ms),
                lease_until_ms=now_ms,
            )
            await self._settle_now(claim, max(0, tokens), now_ms)

    async def _admit_quota(
        self, name: str, quota: Quota, tokens: int, now: float, who: str
    ) -> Admission:
        """One atomic claim on the counters of ``name`` (a key, or a team)."""
        if quota.unlimited:
            return Admission(None, None, {}, estimated_tokens=tokens)

        now_ms = round(now * 1000)
        claim = Claim(
            key=name,
            claim_id=uuid.uuid4().hex,
            tokens=tokens,
            now_ms=now_ms,
            quota=quota,
            day=day_period(now_ms),
            month=month_period(now_ms),
            lease_until_ms=now_ms + int(self.lease_seconds * 1000),
        )
        degraded = False
        try:
            verdict = await self._claim(claim)
        except StoreUnavailable:
            if self.failure_policy == "closed":
                raise ServiceUnavailable(
                    "Rate limits cannot be checked right now; try again shortly.",
                    code="limits_unavailable",
                    headers={"retry-after": "1"},
                ) from None
            verdict, degraded = self.local.claim_now(claim), True

        headers = rate_limit_headers(quota, verdict, now_ms)
        if verdict.refused is not None:
            raise _refusal(claim, verdict, headers, who)
        admission = Admission(self, claim, headers, estimated_tokens=tokens, degraded=degraded)
        if quota.max_concurrent is not None:
            self._live.add(admission)
            self._start_renewer()
        return admission

    async def renew_leases(self) -> None:
        """Extend the leases of every live admission (run periodically by a background task).

        An admission dropped without release stops being renewed, so its slot frees itself
        within ``lease_seconds``.
        """
        live = [a for a in list(self._live) if a.claim is not None and not a.released]
        claims = [a.claim for a in live if a.claim is not None and not a.degraded]
        held_here = [a.claim for a in live if a.claim is not None and a.degraded]
        now_ms = round(self._clock() * 1000)
        until_ms = now_ms + int(self.lease_seconds * 1000)
        if held_here:
            await self.local.renew(held_here, now_ms, until_ms)
        if not claims:
            return
        try:
            await self.store.renew(claims, now_ms, until_ms)
        except StoreUnavailable as exc:
            self._store_failed(exc)
        else:
            self._store_ok()

    async def close(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None
        await self.store.close()

    async def _claim(self, claim: Claim) -> Verdict:
        if self._degraded:
            now = time.monotonic()
            if now < self._next_probe:
                raise StoreUnavailable("skipped: store down, waiting for the next probe")
            self._next_probe = now + self.probe_interval  # this request is the probe
        try:
            verdict = await self.store.claim(claim)
        except StoreUnavailable as exc:
            self._store_failed(exc)
            raise
        self._store_ok()
        return verdict

    async def _settle(
        self, admission: Admission, claim: Claim, actual_tokens: int, local: bool = False
    ) -> None:
        self._live.discard(admission)
        now_ms = round(self._clock() * 1000)
        if local:  # admitted by this process's counters: settled there, at once
            await self.local.settle(claim, actual_tokens, now_ms)
            return
        # Shielded: a request cancelled while releasing still frees its slot.
        await asyncio.shield(self._settle_now(claim, actual_tokens, now_ms))

    async def _settle_now(self, claim: Claim, actual_tokens: int, now_ms: int) -> None:
        try:
            await self.store.settle(claim, actual_tokens, now_ms)
        except StoreUnavailable as exc:
            self._store_failed(exc)
        # No _store_ok() on success: a settle with nothing to free or correct skips the store,
        # so it proves nothing (the next claim, the probe, ends an outage).

    def _store_failed(self, exc: StoreUnavailable) -> None:
        self._next_probe = time.monotonic() + self.probe_interval
        if self._degraded:
            return
        self._degraded = True
        action = (
            "admitting requests by this process's own counters"
            if self.failure_policy == "open"
            else ("refusing requests with 503")
        )
        logger.warning(
            "limit store unavailable (%s); failure_policy=%s: %s until it returns",
            exc,
            self.failure_policy,
            action,
        )
        if self.on_degraded is not None:
            self.on_degraded(True)

    def _store_ok(self) -> None:
        if not self._degraded:
            return
        self._degraded = False
        logger.warning("limit store reachable again; limits are enforced")
        if self.on_degraded is not None:
            self.on_degraded(False)

    def _start_renewer(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(
                self._renew_forever(), name="gateway-limits-lease-renewal"
            )

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                await self.renew_leases()
            except Exception:  # keep renewing whatever one round hit
                logger.exception("renewing concurrency leases failed")


def _refusal(
    claim: Claim, verdict: Verdict, headers: dict[str, str], who: str = "key"
) -> RateLimited:
    quota, tokens = claim.quota, claim.tokens
    retry = verdict.retry_after_ms / 1000 if verdict.retry_after_ms is not None else None
    code = "rate_limit_exceeded"
    if verdict.refused == "requests":
        message = (
            f"Rate limit reached on requests per min (RPM): Limit {quota.rpm}, "
            f"Used {verdict.requests_used}, Requested 1."
        )
    elif verdict.refused == "tokens":
        if retry is None:
            message = (
                f"Request too large on tokens per min (TPM): Limit {quota.tpm}, Requested "
                f"{tokens}. Shorten the prompt or lower max_tokens."
            )
        else:
            message = (
                f"Rate limit reached on tokens per min (TPM): Limit {quota.tpm}, "
                f"Used {verdict.tokens_used}, Requested {tokens}."
            )
    elif verdict.refused in ("day", "month"):
        code = "budget_exceeded"
        period = claim.day if verdict.refused == "day" else claim.month
        limit = quota.daily_tokens if verdict.refused == "day" else quota.monthly_tokens
        which = "daily" if verdict.refused == "day" else "monthly"
        if limit is not None and tokens > limit:
            message = (
                f"Request too large for the {which} token budget: Limit {limit}, "
                f"Requested {tokens}."
            )
        else:
            retry = (period.ends_ms - claim.now_ms) / 1000
            message = (
                f"The {which} token budget of this key is used up: Limit {limit}, Requested "
                f"{tokens}. It renews at the start of the next UTC "
                f"{'day' if which == 'daily' else 'month'}."
            )
    else:
        code = "concurrency_limit_exceeded"
        retry = 1.0
        message = (
            f"Too many concurrent requests for this key: Limit {quota.max_concurrent}. "
            "Retry when one of them has finished."
        )
    if who != "key":
        message = f"Shared limit of {who}: " + message.replace("this key", who)
    headers = dict(headers)
    if retry is not None:
        message += f" Please try again in {format_duration(retry)}."
        headers["retry-after-ms"] = str(max(0, round(retry * 1000)))
    kind = "tokens" if verdict.refused in ("tokens", "day", "month") else "requests"
    return RateLimited(message, retry_after=retry, code=code, headers=headers, kind=kind)
