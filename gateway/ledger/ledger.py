"""The usage ledger: requests hand records over and move on; one task writes them in batches.

Nothing it could keep is lost:

- :meth:`Ledger.begin` (at admission) queues an ``in_flight`` row and :meth:`Ledger.complete`
  (when the request ends) the final one, which replaces it; so a process that dies leaves a row
  per admitted request, with what was known then, which a later start-up marks
  ``interrupted``. :meth:`Ledger.record` queues a row with no in-flight row before it.
- Rows wait in memory (at most ``queue_size``) while the database is down or stalled, and the
  writer retries them with backoff, in order. Past that bound they go to the optional spill
  file (``spill_path``), and are replayed once the database takes rows again; without one, or
  once it is full too, they are dropped: counted in :attr:`Ledger.dropped` (the
  ``gateway_ledger_dropped_total`` metric) with one warning per episode.
- A batch the database refuses is retried row by row, so only a row it refuses by itself
  (quarantined: logged and counted) is lost, never the others of its batch. Text is cleaned for
  the database first (NUL, lone surrogates).
- Rows are written in few transactions (group commit): the writer lets the first row of a batch
  wait up to ``batch_wait`` seconds for others (at once when ``batch_size`` rows are held, or
  someone waits in :meth:`Ledger.flush`). A row costs a transaction's few hundred
  microseconds alone and tens in a batch; a request ending within the wait (a cache hit) has
  its in-flight row superseded before it is written, so it writes one row, not two.

None of these ever waits or raises in a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from gateway.config import LedgerSettings
from gateway.db import Databases, check_url, clean_text, refused_row
from gateway.ledger.postgres import PostgresStore
from gateway.ledger.record import IN_FLIGHT, UsageRecord, UsageRow, sanitized
from gateway.ledger.spill import SpillFile
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


@dataclass(slots=True, eq=False)
class _Row:
    record: UsageRecord
    replaces: bool = False  # a final row whose in-flight row may already be in the database
    superseded: bool = False  # an in-flight row whose final row came before it was written
    taken: bool = False  # handed to the database at least once
    again: bool = False  # handed to it before this write: it may be there already
    at: float = 0.0  # time.monotonic() when queued (a batch's age)
    replayed: bool = False  # from the spill file


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
        retry_max_seconds: float = 5.0,
        spill: SpillFile | None = None,
        interrupted_after: float = 3900.0,
        on_drop: Callable[[int], None] | None = None,
        batch_wait: float = 0.0,
    ) -> None:
        self.store = store
        self.batch_wait = batch_wait
        """Seconds the oldest held row may wait for others before a write (group commit)."""
        self.on_drop = on_drop
        """Called with the number of records each time some are dropped (a metric counter)."""
        self.batch_size = batch_size
        self.capacity = queue_size
        self.open_retry_seconds = open_retry_seconds
        self.open_retry_max_seconds = open_retry_max_seconds
        self.retry_max_seconds = retry_max_seconds
        self.spill = spill
        self.interrupted_after = interrupted_after
        self.dropped = 0
        """Records lost: memory (and spill file) full, refused alone by the database, or still
        held when stop() gave up."""
        self.quarantined = 0
        """Of :attr:`dropped`, rows the database refused by themselves."""
        self.written = 0
        self._rows: deque[_Row] = deque()
        self._overflow: list[_Row] = []  # past `capacity`, for the spill file
        #: (request id, key, start) -> its in-flight row, until complete (an id alone may repeat)
        self._begun: dict[tuple[str, str, datetime], _Row] = {}
        self._writing: list[_Row] = []
        self._spilling: asyncio.Task[None] | None = None
        self._replay_left = 0
        self._wake = asyncio.Event()
        self._hurry = asyncio.Event()  # write now: a batch is full, or someone flushes
        self._flushing = 0  # callers waiting in flush()
        self._idle = asyncio.Event()  # set by the writer when it holds nothing more
        self._task: asyncio.Task[None] | None = None
        self._opened = False
        self._open_lock = asyncio.Lock()
        self._stopped = False
        self._dropping = False
        self._failing = False

    @classmethod
    def from_settings(
        cls,
        settings: LedgerSettings,
        *,
        interrupted_after: float = 3900.0,
        on_drop: Callable[[int], None] | None = None,
        databases: Databases | None = None,
    ) -> Ledger:
        spill = settings.spill_path
        return cls(
            store_from_url(settings.url, table=settings.table, databases=databases),
            queue_size=settings.queue_size,
            batch_size=settings.batch_size,
            spill=SpillFile(spill, settings.spill_max_mb * 1024 * 1024) if spill else None,
            interrupted_after=interrupted_after,
            on_drop=on_drop,
            batch_wait=settings.batch_wait_seconds,
        )

    @property
    def pending(self) -> int:
        """Records held and not yet written (in memory, waiting for the spill file included)."""
        return len(self._rows) + len(self._writing) + len(self._overflow)

    @property
    def healthy(self) -> bool:
        """The database is open and the last write (if any) worked."""
        return self._opened and not self._dropping and not self._failing

    async def start(self) -> None:
        """Start the writer; tries to open the database once now, then keeps retrying.

        In-flight rows older than ``interrupted_after`` (left by a process that died) are
        marked ``interrupted``, and rows a previous run spilled are queued again.
        """
        if self._task is not None:
            return
        self._stopped = False
        with contextlib.suppress(Exception):
            await self._open()  # failures are logged; the writer retries
        if self.spill is not None:
            with contextlib.suppress(OSError):
                await self._replay()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="gateway-ledger")

    def begin(self, record: UsageRecord) -> None:
        """An admitted request: its row now, ``in_flight``, with what is known so far."""
        if record.outcome != IN_FLIGHT:
            record = replace(record, outcome=IN_FLIGHT)
        row = _Row(record)
        if self._push(row):
            self._begun[_request(record)] = row
            if len(self._begun) > 4 * self.capacity:  # a request never completed: forget it
                self._begun.pop(next(iter(self._begun)))

    def complete(self, record: UsageRecord, *, replaces: bool = False) -> None:
        """The request ended: its final row, in place of the in-flight one if there was one.
        ``replaces``: rows of the same request may be in the database although this process
        did not write them (a run resumed after another process stopped: its in-flight row,
        or a final row of the same jobs if it died before storing the run as done)."""
        begun = self._begun.pop(_request(record), None)
        if begun is not None:
            if begun.taken:
                replaces = True  # it may be in the database: the final row replaces it
            else:
                begun.superseded = True  # never written: the final row is enough
        self._push(_Row(record, replaces=replaces))

    def record(self, record: UsageRecord) -> None:
        """Queue ``record`` for writing (a request with no in-flight row)."""
        self.complete(record)

    async def flush(self) -> None:
        """Wait until every record held so far is written or dropped (bound it with a timeout:
        while the database cannot take rows, that never happens)."""
        if self.pending or self._replay_left:
            self._idle.clear()
            self._flushing += 1
            self._hurry.set()
            try:
                await self._idle.wait()
            finally:
                self._flushing -= 1

    async def stop(self, flush_seconds: float = 5.0) -> None:
        """Write what is held (for at most ``flush_seconds``), spill or drop the rest, close."""
        self._stopped = True
        task, self._task = self._task, None
        if task is not None:
            if self._opened:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.flush(), flush_seconds)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._spilling is not None:
            with contextlib.suppress(Exception):
                await self._spilling
        left = [r for r in (*self._writing, *self._rows, *self._overflow) if not r.superseded]
        self._writing, self._overflow = [], []
        self._rows.clear()
        if left and self.spill is not None:
            left = [r for r in left if not r.replayed]  # still in the replay file
            kept = await asyncio.to_thread(
                self.spill.append, [(r.record, r.replaces) for r in left]
            )
            if kept:
                logger.warning(
                    "usage ledger: %d rows not yet written kept in %s", kept, self.spill.path
                )
            left = left[kept:]
        if left:
            self._drop(len(left), "still held at shutdown")
        with contextlib.suppress(Exception):
            await self.store.close()
        self._opened = False

    async def report(
        self, since: datetime | None, until: datetime | None, key_name: str | None = None
    ) -> list[UsageRow]:
        """Usage by key and model (opens the database if the writer has not yet)."""
        await self._open()
        if key_name is not None:  # as its rows were written: a NUL would not even reach them
            key_name = clean_text(key_name)
        return await self.store.report(since, until, key_name)

    async def budget_usage(self, since: datetime, *, cached: bool) -> dict[str, int]:
        """Tokens per key since ``since``, as budgets count them (``cached``: with cache hits)."""
        await self._open()
        return await self.store.budget_usage(since, cached)

    def _push(self, row: _Row) -> bool:
        if self._stopped:
            self._drop(1, "the ledger is stopped")
            return False
        row.record = sanitized(row.record)
        if len(self._rows) + len(self._writing) < self.capacity:
            self._rows.append(row)
        elif self.spill is not None and len(self._overflow) < self.capacity:
            self._overflow.append(row)  # on its way to the spill file (in a thread)
            if self._spilling is None or self._spilling.done():
                self._spilling = asyncio.get_running_loop().create_task(self._spill_overflow())
        else:
            self._drop(
                1,
                f"{self.pending} rows are held in memory (ledger.queue_size "
                f"{self.capacity}) while the database does not take them"
                + (" and the spill file is full" if self.spill is not None else ""),
            )
            return False
        row.at = time.monotonic()
        self._idle.clear()
        self._wake.set()
        if len(self._rows) >= self.batch_size:
            self._hurry.set()
        return True

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
            before = datetime.now(UTC) - timedelta(seconds=self.interrupted_after)
            with contextlib.suppress(Exception):
                if marked := await self.store.mark_interrupted(before):
                    logger.warning("usage ledger: %d requests were interrupted by a crash", marked)

    async def _run(self) -> None:
        delay = self.open_retry_seconds
        while not self._opened:
            await asyncio.sleep(delay)
            with contextlib.suppress(Exception):
                await self._open()
            delay = min(delay * 2, self.open_retry_max_seconds)
        delay = self.open_retry_seconds
        while True:
            if not self._rows:
                if self.spill is not None and not self._replay_left and self.spill.has_rows():
                    await self._replay()
                    continue
                if not self._overflow and not self._replay_left:
                    self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._gather()
            self._writing = self._take()
            left = await self._write(self._writing)
            still = {id(r) for r in left}
            done = [r for r in self._writing if id(r) not in still]
            self._writing = []
            self._replayed(done)
            if left:
                self._rows.extendleft(reversed(left))
                if not self._failing:
                    self._failing = True
                    logger.warning(
                        "usage ledger cannot write to its database; holding %d rows and "
                        "retrying (up to %d in memory)",
                        self.pending,
                        self.capacity,
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_seconds)
                continue
            delay = self.open_retry_seconds
            if self._failing or self._dropping:
                self._failing = self._dropping = False
                logger.warning(
                    "usage ledger is writing again (%d records dropped so far)", self.dropped
                )

    async def _gather(self) -> None:
        """Let the oldest held row wait until it is ``batch_wait`` old, so the rows of
        requests ending meanwhile share its transaction; not while someone flushes, nor
        once a batch is full."""
        left = self._rows[0].at + self.batch_wait - time.monotonic()
        if left > 0 and not self._flushing and len(self._rows) < self.batch_size:
            self._hurry.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._hurry.wait(), left)

    def _take(self) -> list[_Row]:
        batch: list[_Row] = []
        while self._rows and len(batch) < self.batch_size:
            row = self._rows.popleft()
            if row.superseded:
                self._replayed([row])
                continue
            row.again = row.taken or row.replayed  # a spilled row may have been written too
            row.taken = True
            batch.append(row)
        return batch

    async def _write(self, batch: list[_Row]) -> list[_Row]:
        """Write ``batch``; the rows still to write (the database is down), from the first."""
        if not batch:
            return []
        try:
            await self._write_rows(batch, first=not any(r.again for r in batch))
            return []
        except Exception as exc:
            if len(batch) == 1 and refused_row(exc):
                self._quarantine(batch[0], exc)
                return []
            if len(batch) == 1:
                return batch
        for index, row in enumerate(batch):  # one by one: only a bad row stays out
            try:
                await self._write_rows([row])
            except Exception as exc:
                if not refused_row(exc):
                    return batch[index:]
                self._quarantine(row, exc)
        return []

    async def _write_rows(self, rows: Sequence[_Row], *, first: bool = False) -> None:
        """``first``: no row was handed to the database before (a failed batch may have
        committed all the same, so the rows it retries one by one are not first)."""
        replacing = [r.record.request_id for r in rows if r.replaces]
        await self.store.write_many([r.record for r in rows], replacing, first=first)
        self.written += len(rows)

    def _quarantine(self, row: _Row, exc: BaseException) -> None:
        self.quarantined += 1
        record = row.record
        logger.warning(
            "usage ledger row of request %s (key %s) refused by the database, dropped; the "
            "other rows are kept: %s",
            record.request_id,
            record.key_name,
            _describe(exc),
        )
        self.dropped += 1
        if self.on_drop is not None:
            with contextlib.suppress(Exception):
                self.on_drop(1)

    async def _spill_overflow(self) -> None:
        while self._overflow:
            await self._spill_some()

    async def _spill_some(self) -> None:
        assert self.spill is not None
        rows, self._overflow = self._overflow, []
        live = [r for r in rows if not r.superseded]
        try:
            kept = await asyncio.to_thread(
                self.spill.append, [(r.record, r.replaces) for r in live]
            )
        except OSError as exc:
            kept = 0
            logger.warning("usage ledger cannot write its spill file: %s", _describe(exc))
        if not self._dropping and kept:
            logger.warning(
                "usage ledger: memory full (%d rows); rows go to %s", self.capacity, self.spill.path
            )
        if kept < len(live):
            self._drop(len(live) - kept, "the spill file is full")

    async def _replay(self) -> None:
        assert self.spill is not None
        rows = await asyncio.to_thread(self.spill.take)
        for record, replaces in rows:
            self._rows.append(_Row(record, replaces=replaces, replayed=True))
        self._replay_left = len(rows)
        if rows:
            logger.warning("usage ledger: replaying %d rows from %s", len(rows), self.spill.path)
            self._wake.set()
        else:
            await asyncio.to_thread(self.spill.replayed)

    def _replayed(self, rows: Sequence[_Row]) -> None:
        count = sum(1 for r in rows if r.replayed)
        if count and self.spill is not None:
            self._replay_left -= count
            if self._replay_left <= 0:
                self._replay_left = 0
                with contextlib.suppress(OSError):
                    self.spill.replayed()

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


def _request(record: UsageRecord) -> tuple[str, str, datetime]:
    """One request's rows share its id, key and start (a client's x-request-id may repeat)."""
    return (record.request_id, record.key_name, record.time)
