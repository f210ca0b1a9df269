"""Fair share of an account's job cap: keys, teams, weights and priority classes."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.upstream.slots import JobSlots, Share


class Line:
    """Requests queued on ``slots``; ``order`` records who got a slot, in order."""

    def __init__(self, slots: JobSlots) -> None:
        self.slots = slots
        self.order: list[str] = []
        self.tasks: list[asyncio.Task[None]] = []

    async def queue(self, key: str, count: int = 1, **options: Any) -> None:
        async def take() -> None:
            await self.slots.acquire(1, 30, Share(key, **options))
            self.order.append(key)

        for _ in range(count):
            self.tasks.append(asyncio.create_task(take()))
        await asyncio.sleep(0)

    async def grant(self, count: int) -> list[str]:
        """Free one slot at a time, ``count`` times; who got them."""
        start = len(self.order)
        for _ in range(count):
            self.slots.release(1)
            await asyncio.sleep(0)
        return self.order[start:]

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def full(capacity: int = 2) -> Line:
    slots = JobSlots(capacity, 10_000)
    await slots.acquire(capacity, 1)
    return Line(slots)


async def test_a_newcomer_waits_one_grant_behind_a_key_with_a_long_line() -> None:
    line = await full()
    await line.queue("A", 100)
    assert await line.grant(5) == ["A"] * 5
    await line.queue("B")
    # B goes at the next free slot: it waits for no more of A's 95.
    assert await line.grant(2) == ["B", "A"]
    await line.close()


async def test_two_busy_keys_alternate() -> None:
    line = await full()
    await line.queue("A", 10)
    await line.queue("B", 10)
    assert await line.grant(6) == ["A", "B"] * 3
    await line.close()


async def test_weights_share_slots_in_proportion() -> None:
    line = await full()
    await line.queue("heavy", 30, weight=2.0)
    await line.queue("light", 30, weight=1.0)
    got = await line.grant(30)
    assert got.count("heavy") == 20 and got.count("light") == 10
    await line.close()


async def test_teams_share_first_then_their_keys() -> None:
    line = await full()
    # Team red has three busy keys, the lone key "solo" one line: solo gets half, not a quarter.
    for key in ("r1", "r2", "r3"):
        await line.queue(key, 20, team="red")
    await line.queue("solo", 20)
    got = await line.grant(24)
    assert got.count("solo") == 12
    assert sorted(got.count(k) for k in ("r1", "r2", "r3")) == [4, 4, 4]
    await line.close()


async def test_a_higher_priority_goes_first() -> None:
    line = await full()
    await line.queue("batch", 5, priority=-1)
    await line.queue("normal", 2)
    await line.queue("urgent", 1, priority=5)
    assert await line.grant(4) == ["urgent", "normal", "normal", "batch"]
    await line.close()


async def test_waits_are_reported_per_key() -> None:
    waits: list[tuple[str, float]] = []
    slots = JobSlots(1, 10, on_wait=lambda key, seconds: waits.append((key, seconds)))
    await slots.acquire(1, 1, Share("A"))
    task = asyncio.create_task(slots.acquire(1, 5, Share("B")))
    await asyncio.sleep(0.02)
    slots.release(1)
    await task
    assert [k for k, _ in waits] == ["A", "B"]
    assert waits[0][1] == 0.0 and waits[1][1] >= 0.01


async def test_a_cancelled_waiter_leaves_no_trace() -> None:
    line = await full(1)
    await line.queue("A", 3)
    line.tasks[0].cancel()
    await asyncio.sleep(0)
    assert line.slots.waiting == 2
    assert await line.grant(2) == ["A", "A"]
    assert line.slots.waiting == 0 and not line.slots._classes
    await line.close()


async def test_batch_lines_hold_at_most_their_share_and_live_requests_go_at_once() -> None:
    slots = JobSlots(10, 10_000, batch_share=0.6)
    batch = Share("nightly", batch=True)
    granted: list[str] = []

    async def take(share: Share, name: str) -> None:
        await slots.acquire(1, 30, share)
        granted.append(name)

    lines = [asyncio.create_task(take(batch, f"line {i}")) for i in range(20)]
    await asyncio.sleep(0.01)
    assert slots.batch_in_use == 6 and slots.in_use == 6  # their share of the cap, no more
    assert slots.waiting == 14
    # A live request finds the rest of the cap free, although batch lines are waiting.
    await asyncio.wait_for(slots.acquire(1, 30, Share("alice")), 0.5)
    assert slots.in_use == 7
    for task in lines:
        task.cancel()
    await asyncio.gather(*lines, return_exceptions=True)


async def test_live_requests_go_before_batch_lines_when_a_slot_frees() -> None:
    line = await full(capacity=2)
    line.slots.batch_capacity = 2
    await line.queue("batch", 3, batch=True)
    await line.queue("live", 2)
    assert await line.grant(3) == ["live", "live", "batch"]
    await line.close()


async def test_a_batch_slot_given_back_is_counted_out_of_the_batch_share() -> None:
    slots = JobSlots(4, 100, batch_share=0.5)
    await slots.acquire(2, 1, Share("nightly", batch=True))
    waiting = asyncio.create_task(slots.acquire(1, 5, Share("nightly", batch=True)))
    await asyncio.sleep(0.01)
    assert not waiting.done()  # the batch share (2 of 4) is full though 2 slots are free
    slots.release(1, batch=True)
    await asyncio.wait_for(waiting, 1)
    assert (slots.in_use, slots.batch_in_use) == (2, 2)
