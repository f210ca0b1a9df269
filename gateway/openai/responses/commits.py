"""Group commit: writes that arrive while one is in flight share the next transaction.

A caller hands :meth:`GroupCommit.submit` one item and returns once that item is committed (or
raises why it was not), as if it had written alone; the database sees one transaction per
gathering instead of one per item. A write goes at once when none is in flight, so a lone
caller waits for nothing. A gathering the database refuses (a bad value, a constraint) is
written again item by item, so one bad item fails only its own caller; a database that is
away fails the gathering at once (each caller its own 503), rather than once per item.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from gateway.db import refused_row

T = TypeVar("T")


class GroupCommit(Generic[T]):
    """Items written in shared transactions by ``write`` (one call: one transaction)."""

    def __init__(self, write: Callable[[Sequence[T]], Awaitable[None]]) -> None:
        self._write = write
        self._queued: list[tuple[T, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> None:
        """Return once ``item`` is committed. A caller that gives up (cancelled) does not
        take the item back: it is written all the same."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._queued.append((item, done))
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._drain())
        await done

    async def close(self) -> None:
        """Wait until what is queued is written."""
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await self._writer

    async def _drain(self) -> None:
        while self._queued:
            batch, self._queued = self._queued, []
            try:
                await self._write([item for item, _ in batch])
            except Exception as exc:
                if len(batch) == 1 or not refused_row(exc):
                    for _, done in batch:
                        _settle(done, exc)
                    continue
                for item, done in batch:  # alone: only an item the database refuses fails
                    try:
                        await self._write([item])
                    except Exception as alone:
                        _settle(done, alone)
                    else:
                        _settle(done, None)
                continue
            for _, done in batch:
                _settle(done, None)


def _settle(done: asyncio.Future[None], error: BaseException | None) -> None:
    if done.done():  # its caller was cancelled
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)
