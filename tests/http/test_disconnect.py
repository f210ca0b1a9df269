"""An answer's work runs in the request's task until done or until its client leaves."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from gateway.http.responses import _race_disconnect


def _receive(left: asyncio.Event) -> Any:
    async def receive() -> dict[str, Any]:
        await left.wait()
        return {"type": "http.disconnect"}

    return receive


async def test_work_that_ends_is_done_in_the_requests_own_task() -> None:
    here = asyncio.current_task()
    ran_in: list[asyncio.Task[Any] | None] = []

    async def work() -> None:
        ran_in.append(asyncio.current_task())

    assert await _race_disconnect(work(), _receive(asyncio.Event()))
    assert ran_in == [here]
    await asyncio.sleep(0.05)  # no stray cancellation reaches the task afterwards
    assert here is not None and here.cancelling() == 0


async def test_a_client_that_leaves_stops_the_work_and_nothing_else() -> None:
    left = asyncio.Event()
    stopped: list[bool] = []

    async def work() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            stopped.append(True)
            raise

    asyncio.get_running_loop().call_later(0.05, left.set)
    assert not await _race_disconnect(work(), _receive(left))
    assert stopped == [True]
    here = asyncio.current_task()
    assert here is not None and here.cancelling() == 0
    await asyncio.sleep(0.01)  # the task itself is not cancelled


async def test_work_that_swallows_the_cancellation_still_counts_as_left() -> None:
    left = asyncio.Event()

    async def work() -> None:
        with contextlib.suppress(asyncio.CancelledError):  # cleans up and returns, as some do
            await asyncio.sleep(10)

    asyncio.get_running_loop().call_later(0.05, left.set)
    assert not await _race_disconnect(work(), _receive(left))
    here = asyncio.current_task()
    assert here is not None and here.cancelling() == 0


async def test_a_cancellation_from_elsewhere_propagates() -> None:
    async def work() -> None:
        await asyncio.sleep(10)

    async def request() -> bool:
        return await _race_disconnect(work(), _receive(asyncio.Event()))

    task = asyncio.ensure_future(request())
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_receive_failing_stops_the_work_with_its_error() -> None:
    async def work() -> None:
        await asyncio.sleep(10)

    async def receive() -> dict[str, Any]:
        raise RuntimeError("the connection broke")

    with pytest.raises(RuntimeError, match="connection broke"):
        await _race_disconnect(work(), receive)
