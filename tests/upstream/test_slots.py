"""The per-account cap on jobs in flight: fair waiting, bounded line, no leaked slots."""

from __future__ import annotations

import asyncio

import pytest

from gateway.errors import RateLimited
from gateway.upstream.slots import JobSlots


async def test_no_cap_never_waits() -> None:
    slots = JobSlots(None, 0)
    await slots.acquire(100, 0.01)
    assert slots.in_use == 100


async def test_waiters_are_served_in_order_when_slots_free_up() -> None:
    slots = JobSlots(2, 10)
    await slots.acquire(2, 1)
    order: list[str] = []

    async def take(name: str, n: int) -> None:
        await slots.acquire(n, 5)
        order.append(name)

    first = asyncio.create_task(take("first", 1))
    second = asyncio.create_task(take("second", 1))
    await asyncio.sleep(0)
    assert slots.waiting == 2
    slots.release(1)
    await asyncio.sleep(0)
    assert order == ["first"]
    slots.release(1)
    await asyncio.gather(first, second)
    assert order == ["first", "second"]
    assert slots.in_use == 2


async def test_a_full_line_is_refused_at_once() -> None:
    slots = JobSlots(1, 1)
    await slots.acquire(1, 1)
    waiting = asyncio.create_task(slots.acquire(1, 5))
    await asyncio.sleep(0)
    with pytest.raises(RateLimited) as info:
        await slots.acquire(1, 5)
    assert info.value.status_code == 429 and "retry-after" in info.value.headers
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert slots.waiting == 0


async def test_waiting_past_the_deadline_is_a_429_and_leaves_the_line() -> None:
    slots = JobSlots(1, 5)
    await slots.acquire(1, 1)
    with pytest.raises(RateLimited):
        await slots.acquire(1, 0.01)
    assert slots.waiting == 0
    slots.release(1)
    assert slots.in_use == 0


async def test_a_request_larger_than_the_cap_runs_alone() -> None:
    slots = JobSlots(2, 5)
    await slots.acquire(5, 1)
    assert slots.in_use == 5
