"""Exchange.release: each cleanup exactly once, whatever happens to the others."""

from __future__ import annotations

import asyncio
import logging

import pytest

from gateway.http.exchange import Exchange


async def test_each_cleanup_runs_once_and_a_failing_one_does_not_stop_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[str] = []

    async def first(_: Exchange) -> None:
        ran.append("first")
        raise RuntimeError("store trouble")

    async def second(_: Exchange) -> None:
        ran.append("second")

    exchange = Exchange("req", "/v1/chat/completions")
    exchange.cleanups += [first, second]
    with caplog.at_level(logging.ERROR, logger="gateway.access"):
        await exchange.release()
        await exchange.release()
    assert ran == ["first", "second"]
    assert "request cleanup failed" in caplog.text


async def test_a_cleanup_cancelled_midway_leaves_the_rest_to_the_next_call() -> None:
    ran: list[str] = []
    entered = asyncio.Event()

    async def slow(_: Exchange) -> None:
        entered.set()
        await asyncio.sleep(60)

    async def jobs(_: Exchange) -> None:
        ran.append("jobs")

    exchange = Exchange("req", "/v1/chat/completions")
    exchange.cleanups += [slow, jobs]
    task = asyncio.ensure_future(exchange.release())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ran == []
    await exchange.release()  # what the runtime's finish does
    assert ran == ["jobs"]
