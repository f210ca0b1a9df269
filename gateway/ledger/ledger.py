"""The usage ledger: requests hand records over and move on; one task writes them in batches.

:meth:`Ledger.record` never waits and never raises: it puts the record on a bounded queue, or
drops it (counted in :attr:`Ledger.dropped`) when the queue is full. The writer task takes
whatever has queued up, up to ``batch_size``, and writes it in one transaction; if the database
fails, that batch is dropped and counted too. A warning is logged when dropping starts, and
another when writing works again. A database that is down at start-up is retried in the
background, with records queuing meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime

from gateway.config import LedgerSettings
from gateway.db import Databases, check_url
from gateway.ledger.postgres import PostgresStore
from gateway.ledger.record import UsageRecord, UsageRow
from gateway.ledger.sqlite import SqliteStore
from gateway.ledger.store import DEFAULT_TABLE, LedgerStore

logger = logging.getLogger("gateway.ledger")


def store_from_url(
    url: str, *, table: str = DEFAULT_TABLE, databases: Databases | None = None
) -> LedgerStore:
    """A store for ``sqlite:///...`` or ``postgresql://...`` / ``postgres://...``; not yet open
    (shared with the database's other users through ``databases``)."""
    check_url(url)
    if url.startswith("sqlite:"):
        return SqliteStore.from_url(url, table=table, databases=databases)
    return PostgresStore(url, table=table, databases=databases)


class Ledger:
    """Records usage without ever holding up or failing a request."""

    def __init__(
        self,
        store: LedgerStore,
        *,
        queue_size: int = 10_000,
        batch_size: int = 500,
        open_retry_seconds: float = 1.0,
        open_retry_max_seconds: float = 30.0,
        on_drop: Callable[[int], None] | None = None,
    ) -> None:
        self.store = store
        self.on_drop = on_drop
        """Called with the number of records each time some are dropped (a metric counter)."""
        self.batch_size = batch_size
        self.open_retry_seconds = open_retry_seconds
        self.open_retry_max_seconds = open_retry_max_seconds
        self.dropped = 0
        """Records lost: queue full, database failed, or still queued when stop() gave up."""
        self.written = 0
        self._queue: asyncio.Queue[UsageRecord] = asyncio.Queue(maxsize=queue_size)
        self._task: asyncio.Task[None] | None = None
        self._opened = False
        self._open_lock = asyncio.Lock()
        self._stopped = False
        self._dropping = False

    @classmethod
    def from_settings(
        cls,
        settings: LedgerSettings,
        *,
        on_drop: Callable[[int], None] | None = None,
        databases: Databases | None = None,
    ) -> Ledger:
        table = settings.table
        store = store_from_url(settings.url, table=table, databases=databases)
        return cls(
            store,
            queue_size=settings.queue_size,
            batch_size=settings.batch_size,
            on_drop=on_drop,
        )

    @property
    def pending(self) -> int:
        """Records queued and not yet written."""
        return self._queue.qsize()

    @property
    def healthy(self) -> bool:
        """The database is open and the last write (if any) worked."""
        return self._opened and not self._dropping

    async def start(self) -> None:
        """Start the writer; tries to open the database once now, then keeps retrying."""
        if self._task is not None:
            return
        self._stopped = False
        with contextlib.suppress(Exception):
            await self._open()  # failures are logged; the writer retries
        self._task = asyncio.get_running_loop().create_task(self._run(), name="gateway-ledger")

    def record(self, record: UsageRecord) -> None:
        """Queue ``record`` for writing; drop it (and count it) if the queue is full."""
        if self._stopped:
            self._drop(1, "the ledger is stopped")
            return
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            self._drop(1, "the queue is full")

    async def flush(self) -> None:
        """Wait until every record queued so far is written or dropped (bound it with a timeout:
        while the database cannot be opened, that never happens)."""
        await self._queue.join()

    async def stop(self, flush_seconds: float = 5.0) -> None:
        """Write what is queued (for at most ``flush_seconds``), then close the database."""
        self._stopped = True
        task, self._task = self._task, None
        if task is not None:
            if self._opened:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._queue.join(), flush_seconds)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        left = 0
        while not self._queue.empty():
            self._queue.get_nowait()
            self._queue.task_done()
            left += 1
        if left:
            self._drop(left, "still queued at shutdown")
        with contextlib.suppress(Exception):
            await self.store.close()
        self._opened = False

    async def report(
        self, since: datetime | None, until: datetime | None, key_name: str | None = None
    ) -> list[UsageRow]:
        """Usage by key and model (opens the database if the writer has not yet)."""
        await self._open()
        return await self.store.report(since, until, key_name)

    async def _open(self) -> None:
        async with self._open_lock:
            if self._opened:
                return
            try:
                await self.store.open()
            except Exception as exc:
                logger.warning("usage ledger cannot open its database: %s", _describe(exc))
                raise
            self._opened = True

    async def _run(self) -> None:
        delay = self.open_retry_seconds
        while not self._opened:
            await asyncio.sleep(delay)
            with contextlib.suppress(Exception):
                await self._open()
            delay = min(delay * 2, self.open_retry_max_seconds)
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self.store.write_many(batch)
            except asyncio.CancelledError:
                self._drop(len(batch), "stopped while writing")
                raise
            except Exception as exc:
                self._drop(len(batch), f"writing failed: {_describe(exc)}")
            else:
                self.written += len(batch)
                if self._dropping:
                    self._dropping = False
                    logger.warning(
                        "usage ledger is writing again (%d records dropped so far)", self.dropped
                    )
            finally:
                for _ in batch:
                    self._queue.task_done()

    def _drop(self, count: int, reason: str) -> None:
        self.dropped += count
        if self.on_drop is not None:
            with contextlib.suppress(Exception):  # a broken callback must not fail a request
                self.on_drop(count)
        if not self._dropping:
            self._dropping = True
            logger.warning("usage ledger is dropping records: %s", reason)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
