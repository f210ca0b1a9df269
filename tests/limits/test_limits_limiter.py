"""Limiter behaviour, run against both stores (Redis only when REDIS_URL is set)."""

from __future__ import annotations

import gc
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from limits_support import FakeClock, StoreFactory, make_key

from gateway.config import KeySettings
from gateway.errors import PermissionDenied, RateLimited
from gateway.http.shapes import openai_body
from gateway.limits import Admission, Limiter


async def refused(limiter: Limiter, key: KeySettings, tokens: int = 0) -> RateLimited:
    with pytest.raises(RateLimited) as info:
        await limiter.admit(key, "m", tokens)
    return info.value


# --- requests per minute -------------------------------------------------------------------------


async def test_rpm_admits_exactly_the_limit_then_refuses(
    limiter: Limiter, clock: FakeClock
) -> None:
    key = make_key(rpm=5)
    for _ in range(5):
        await limiter.admit(key, "m", 10)
        clock.advance(2)
    error = await refused(limiter, key)
    assert error.status_code == 429
    assert error.code == "rate_limit_exceeded"
    # The first request (60 s window) leaves 60 - 10 = 50 s from now.
    assert error.headers["retry-after"] == "50"
    assert error.headers["retry-after-ms"] == "50000"
    assert error.headers["x-ratelimit-remaining-requests"] == "0"
    assert "Limit 5" in error.message


async def test_rpm_window_slides(limiter: Limiter, clock: FakeClock) -> None:
    key = make_key(rpm=2)
    await limiter.admit(key, "m", 0)
    clock.advance(30)
    await limiter.admit(key, "m", 0)
    await refused(limiter, key)
    clock.advance(29.999)
    error = await refused(limiter, key)
    assert error.headers["retry-after-ms"] == "1"
    clock.advance(0.001)  # the first request is exactly 60 s old: it no longer counts
    await limiter.admit(key, "m", 0)
    error = await refused(limiter, key)
    assert error.headers["retry-after"] == "30"


async def test_request_headers_count_down(limiter: Limiter, clock: FakeClock) -> None:
    key = make_key(rpm=3)
    seen = []
    for _ in range(3):
        admission = await limiter.admit(key, "m", 0)
        seen.append(admission.headers)
        clock.advance(12)
    assert [h["x-ratelimit-remaining-requests"] for h in seen] == ["2", "1", "0"]
    assert {h["x-ratelimit-limit-requests"] for h in seen} == {"3"}
    assert {h["x-ratelimit-reset-requests"] for h in seen} == {"1m0s"}
    assert "x-ratelimit-limit-tokens" not in seen[0]
    # 36 s after the first request, the last one (at +24 s) leaves the window in 48 s.
    error = await refused(limiter, key)
    assert openai_body(error)["error"]["type"] == "requests"  # as OpenAI: code can branch on it
    assert error.headers["x-ratelimit-reset-requests"] == "48s"
    assert error.headers["retry-after"] == "24"


# --- tokens per minute ---------------------------------------------------------------------------


async def test_tpm_counts_estimated_tokens(limiter: Limiter, clock: FakeClock) -> None:
    key = make_key(tpm=100)
    first = await limiter.admit(key, "m", 60)
    assert first.headers["x-ratelimit-limit-tokens"] == "100"
    assert first.headers["x-ratelimit-remaining-tokens"] == "40"
    assert first.headers["x-ratelimit-reset-tokens"] == "1m0s"
    assert "x-ratelimit-limit-requests" not in first.headers
    clock.advance(10)
    second = await limiter.admit(key, "m", 40)
    assert second.headers["x-ratelimit-remaining-tokens"] == "0"
    error = await refused(limiter, key, 1)
    assert error.code == "rate_limit_exceeded"
    assert openai_body(error)["error"]["type"] == "tokens"
    assert "tokens per min" in error.message
    assert error.headers["retry-after"] == "50"  # the 60 tokens of the first second free first
    clock.advance(50)
    third = await limiter.admit(key, "m", 60)
    assert third.headers["x-ratelimit-remaining-tokens"] == "0"


async def test_tpm_release_corrects_the_estimate(limiter: Limiter) -> None:
    key = make_key(tpm=100)
    admission = await limiter.admit(key, "m", 90)
    await refused(limiter, key, 20)
    await admission.release(30)  # 60 tokens fewer than estimated
    later = await limiter.admit(key, "m", 70)
    assert later.headers["x-ratelimit-remaining-tokens"] == "0"
    await refused(limiter, key, 1)


async def test_tpm_release_can_charge_more_than_estimated(limiter: Limiter) -> None:
    key = make_key(tpm=100)
    admission = await limiter.admit(key, "m", 10)
    await admission.release(95)
    await refused(limiter, key, 10)
    assert (await limiter.admit(key, "m", 5)).headers["x-ratelimit-remaining-tokens"] == "0"


async def test_request_larger_than_tpm_is_refused_without_retry_after(limiter: Limiter) -> None:
    key = make_key(tpm=100)
    error = await refused(limiter, key, 101)
    assert "too large" in error.message
    assert "retry-after" not in error.headers
    assert error.headers["x-ratelimit-remaining-tokens"] == "100"


# --- budgets -------------------------------------------------------------------------------------


async def test_daily_budget_rolls_over_at_utc_midnight(limiter: Limiter, clock: FakeClock) -> None:
    key = make_key(daily_tokens=100)
    clock.set(datetime(2024, 3, 10, 23, 59, 0, tzinfo=UTC))
    await limiter.admit(key, "m", 80)
    error = await refused(limiter, key, 30)
    assert error.code == "budget_exceeded"
    assert error.status_code == 429
    assert error.headers["retry-after"] == "60"
    assert "daily" in error.message
    await limiter.admit(key, "m", 20)  # exactly the budget
    clock.set(datetime(2024, 3, 10, 23, 59, 59, 999_000, tzinfo=UTC))
    await refused(limiter, key, 1)
    clock.set(datetime(2024, 3, 11, 0, 0, 0, tzinfo=UTC))
    await limiter.admit(key, "m", 100)


async def test_monthly_budget_rolls_over_at_the_utc_month(
    limiter: Limiter, clock: FakeClock
) -> None:
    key = make_key(monthly_tokens=1000, daily_tokens=600)
    clock.set(datetime(2024, 2, 10, 8, 0, tzinfo=UTC))
    await limiter.admit(key, "m", 600)
    clock.set(datetime(2024, 2, 29, 23, 0, tzinfo=UTC))  # a leap day
    await limiter.admit(key, "m", 400)
    error = await refused(limiter, key, 1)
    assert error.code == "budget_exceeded"
    assert "monthly" in error.message
    assert error.headers["retry-after"] == "3600"
    clock.set(datetime(2024, 3, 1, 0, 0, tzinfo=UTC))
    await limiter.admit(key, "m", 600)  # the daily budget is the limit now
    error = await refused(limiter, key, 1)
    assert "daily" in error.message


async def test_budget_release_refunds_unused_tokens(limiter: Limiter) -> None:
    key = make_key(daily_tokens=100)
    admission = await limiter.admit(key, "m", 90)
    await refused(limiter, key, 20)
    await admission.release(10)
    await limiter.admit(key, "m", 90)
    await refused(limiter, key, 1)


async def test_budgets_are_reconciled_with_what_the_ledger_counted(
    limiter: Limiter, clock: FakeClock
) -> None:
    """At start-up the counters take the ledger's figures: after a crash they held charges
    for requests whose rows say otherwise (or, after Redis lost them, nothing)."""
    daily, monthly = make_key(daily_tokens=100), make_key(monthly_tokens=1000)
    daily = daily.model_copy(update={"name": "daily"})
    monthly = monthly.model_copy(update={"name": "monthly"})
    await limiter.admit(daily, "m", 90)  # charged, never settled: the process died
    budgets = [("daily", True, False), ("monthly", False, True)]
    await limiter.reconcile(budgets, {"daily": 30}, {"monthly": 995}, clock())
    await limiter.admit(daily, "m", 70)  # 30 + 70: exactly the budget
    await refused(limiter, daily, 1)
    await limiter.admit(monthly, "m", 5)
    error = await refused(limiter, monthly, 1)
    assert "monthly" in error.message


async def test_request_larger_than_budget(limiter: Limiter) -> None:
    error = await refused(limiter, make_key(daily_tokens=100), 101)
    assert error.code == "budget_exceeded"
    assert "retry-after" not in error.headers


# --- concurrency ---------------------------------------------------------------------------------


async def test_concurrency_limit_and_release(limiter: Limiter) -> None:
    key = make_key(max_concurrent=2)
    first = await limiter.admit(key, "m", 0)
    second = await limiter.admit(key, "m", 0)
    error = await refused(limiter, key)
    assert error.code == "concurrency_limit_exceeded"
    assert error.headers["retry-after"] == "1"
    await first.release(0)
    third = await limiter.admit(key, "m", 0)
    await refused(limiter, key)
    await second.release(0)
    await third.release(0)
    await limiter.admit(key, "m", 0)
    await limiter.admit(key, "m", 0)


async def test_release_is_idempotent(limiter: Limiter) -> None:
    key = make_key(max_concurrent=2, tpm=100)
    first = await limiter.admit(key, "m", 50)
    await limiter.admit(key, "m", 10)
    await first.release(0)
    await first.release(0)  # must not free the second request's slot or refund twice
    assert first.released
    third = await limiter.admit(key, "m", 10)
    assert third.headers["x-ratelimit-remaining-tokens"] == "80"
    error = await refused(limiter, key)
    assert error.code == "concurrency_limit_exceeded"


async def test_lease_of_a_lost_admission_expires(limiter: Limiter, clock: FakeClock) -> None:
    key = make_key(max_concurrent=1)
    held = await limiter.admit(key, "m", 0)
    lost: Admission | None = await limiter.admit(make_key("bob", max_concurrent=1), "m", 0)
    assert lost is not None
    lost = None  # dropped without release, as a crashed handler would
    gc.collect()
    clock.advance(20)
    await limiter.renew_leases()  # renews only the live admission
    clock.advance(20)  # 40 s: the lost lease (30 s) expired, the held one was renewed to 50 s
    await limiter.admit(make_key("bob", max_concurrent=1), "m", 0)
    await refused(limiter, key)
    await held.release(0)
    await limiter.admit(key, "m", 0)


async def test_renewed_lease_outlives_its_first_expiry(limiter: Limiter, clock: FakeClock) -> None:
    key = make_key(max_concurrent=1)
    held = await limiter.admit(key, "m", 0)
    for _ in range(6):
        clock.advance(10)
        await limiter.renew_leases()
    await refused(limiter, key)
    await held.release(0)


# --- refusals consume nothing --------------------------------------------------------------------


async def test_refusal_consumes_nothing(limiter: Limiter) -> None:
    key = make_key(rpm=10, tpm=1000, daily_tokens=5000, max_concurrent=1)
    first = await limiter.admit(key, "m", 100)
    for _ in range(5):
        error = await refused(limiter, key, 100)
        assert error.code == "concurrency_limit_exceeded"
        assert error.headers["x-ratelimit-remaining-requests"] == "9"
        assert error.headers["x-ratelimit-remaining-tokens"] == "900"
    await first.release(100)
    second = await limiter.admit(key, "m", 100)
    assert second.headers["x-ratelimit-remaining-requests"] == "8"
    assert second.headers["x-ratelimit-remaining-tokens"] == "800"


async def test_budget_refusal_does_not_count_a_request(limiter: Limiter) -> None:
    key = make_key(rpm=3, daily_tokens=100)
    await limiter.admit(key, "m", 100)
    for _ in range(5):
        assert (await refused(limiter, key, 1)).code == "budget_exceeded"
    assert (await limiter.admit(key, "m", 0)).headers["x-ratelimit-remaining-requests"] == "1"


async def test_keys_are_independent(limiter: Limiter) -> None:
    await limiter.admit(make_key("alice", rpm=1), "m", 0)
    await refused(limiter, make_key("alice", rpm=1))
    await limiter.admit(make_key("bob", rpm=1), "m", 0)


async def test_limiters_on_one_store_share_state(
    store_factory: StoreFactory, clock: FakeClock
) -> None:
    replicas = [Limiter(store_factory(), clock=clock) for _ in range(3)]
    key = make_key(rpm=4, max_concurrent=2)
    try:
        admitted = [await replicas[i % 3].admit(key, "m", 0) for i in range(2)]
        with pytest.raises(RateLimited):
            await replicas[2].admit(key, "m", 0)
        await admitted[0].release(0)
        await replicas[2].admit(key, "m", 0)
        await admitted[1].release(0)
        await replicas[1].admit(key, "m", 0)
        with pytest.raises(RateLimited) as info:
            await replicas[0].admit(key, "m", 0)
        assert info.value.code == "rate_limit_exceeded"
    finally:
        for replica in replicas:
            await replica.close()


# --- 403s ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "model", "code"),
    [
        ({"disabled": True}, "m", "key_disabled"),
        ({"disabled": True, "expires_at": datetime(2020, 1, 1, tzinfo=UTC)}, "m", "key_disabled"),
        ({"expires_at": datetime(2024, 3, 10, 11, 59, tzinfo=UTC)}, "m", "key_expired"),
        ({"expires_at": datetime(2024, 3, 10, 12, 0)}, "m", "key_expired"),  # naive means UTC
        ({"expires_at": "2024-03-10T13:00:00+02:00"}, "m", "key_expired"),
        ({"models": ("a", "b")}, "m", "model_not_allowed"),
        ({"models": ("a",), "expires_at": "2030-01-01T00:00:00Z"}, "b", "model_not_allowed"),
    ],
)
async def test_forbidden(limiter: Limiter, settings: dict[str, Any], model: str, code: str) -> None:
    key = make_key(rpm=1, **settings)
    with pytest.raises(PermissionDenied) as info:
        await limiter.admit(key, model, 0)
    assert info.value.status_code == 403
    assert info.value.code == code
    allowed = make_key(rpm=1, models=settings.get("models"))
    # The refusal did not take the only request of the minute.
    await limiter.admit(allowed, "a" if allowed.models else "m", 0)


async def test_not_yet_expired_and_allowed_models(limiter: Limiter) -> None:
    key = make_key(models=("gpt-local",), expires_at=datetime(2024, 3, 10, 12, 0, 1, tzinfo=UTC))
    await limiter.admit(key, "gpt-local", 0)
    await limiter.admit(key, "alias-of-local", 0, aliases=("gpt-local",))
    with pytest.raises(PermissionDenied) as info:
        await limiter.admit(key, "other", 0, aliases=("also-other",))
    assert info.value.param == "model"


async def test_key_without_limits_has_no_headers(limiter: Limiter) -> None:
    admission = await limiter.admit(make_key(), "m", 10**9)
    assert admission.headers == {}
    assert not admission.degraded
    await admission.release(5)


async def test_expiry_uses_the_clock(limiter: Limiter, clock: FakeClock) -> None:
    expires = datetime.fromtimestamp(clock.now, UTC) + timedelta(seconds=5)
    key = make_key(expires_at=expires)
    await limiter.admit(key, "m", 0)
    clock.advance(5)
    with pytest.raises(PermissionDenied):
        await limiter.admit(key, "m", 0)
