"""Coalesced polling: one status request per tick serves every job in flight for an account.

Requests do not poll. Each one opens a :class:`JobWatch` on its job ids; the account's
:class:`AccountPoller` runs a single loop that, every ``poll_interval``, asks for the status of
all watched ids at once (split into chunks that keep the URL short), and hands each watch the
latest snapshot of its own jobs. Because the log is cumulative, only the latest snapshot
matters: a slow reader never falls behind, it just sees a longer log next time.

A job leaves the poller when it ends, or when the last watch on it closes (the client went
away, or its answer was already complete). Failed polls back off with jitter; jobs are not
failed for it: each request's own deadline decides when to give up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence

from gateway.config import UpstreamSettings
from gateway.upstream.client import JobsClient, backoff_delay
from gateway.upstream.errors import UpstreamFailure
from gateway.upstream.models import JobPhase, JobSnapshot

logger = logging.getLogger("gateway.poller")

#: Called at every tick: (account name, jobs polled, ids carried by each status request), and
#: with no requests whenever jobs leave between ticks, so a gauge fed by it reaches zero.
TickHook = Callable[[str, int, Sequence[int]], None]


class JobWatch:
    """One request's window on its jobs: the newest snapshot of each and a way to await change."""

    __slots__ = ("_changed", "_poller", "_waiter", "ids", "latest", "poll_error")

    def __init__(self, poller: AccountPoller, ids: Sequence[str]) -> None:
        self._poller = poller
        self.ids = tuple(ids)
        self.latest: dict[str, JobSnapshot] = {}
        self.poll_error: UpstreamFailure | None = None
        self._changed: dict[str, None] = {}
        self._waiter: asyncio.Future[None] | None = None

    def deliver(self, snapshot: JobSnapshot) -> None:
        previous = self.latest.get(snapshot.id)
        if previous is not None and previous == snapshot:
            return
        self.latest[snapshot.id] = snapshot
        self._changed[snapshot.id] = None
        self.poll_error = None
        self.wake()

    def report_error(self, failure: UpstreamFailure) -> None:
        self.poll_error = failure

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def changes(self, within: float) -> list[JobSnapshot]:
        """The snapshots that changed since the last call; empty if ``within`` seconds passed."""
        if not self._changed:
            loop = asyncio.get_running_loop()
            waiter = loop.create_future()
            self._waiter = waiter
            handle = loop.call_later(within, _finish, waiter)
            try:
                await waiter
            finally:
                handle.cancel()
                self._waiter = None
        changed = [self.latest[job_id] for job_id in self._changed]
        self._changed.clear()
        return changed

    def release(self, job_id: str) -> None:
        """This request needs no more news of ``job_id`` (its answer is complete)."""
        self._poller.unwatch(self, (job_id,))

    def close(self) -> None:
        self._poller.unwatch(self, self.ids)


def _finish(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class AccountPoller:
    """The single polling loop of one upstream account (one token)."""

    def __init__(
        self,
        client: JobsClient,
        token: str,
        account: str,
        settings: UpstreamSettings,
        base_url_length: int,
        on_tick: TickHook | None = None,
    ) -> None:
        self.account = account
        self._client = client
        self._token = token
        self._settings = settings
        self._url_budget = settings.status_url_max_length - base_url_length - len("/jobs/")
        self._on_tick = on_tick
        self._watches: dict[str, list[JobWatch]] = {}
        self._missing: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def jobs_in_flight(self) -> int:
        return len(self._watches)

    @contextlib.contextmanager
    def watch(self, ids: Sequence[str]) -> Iterator[JobWatch]:
        watch = JobWatch(self, ids)
        for job_id in watch.ids:
            self._watches.setdefault(job_id, []).append(watch)
        self._ensure_running()
        try:
            yield watch
        finally:
            watch.close()

    def wake_all(self) -> None:
        """Wake every waiting request so it re-checks its deadlines (e.g. on shutdown)."""
        for watches in self._watches.values():
            for watch in watches:
                watch.wake()

    def unwatch(self, watch: JobWatch, ids: Iterable[str]) -> None:
        changed = False
        for job_id in ids:
            watches = self._watches.get(job_id)
            if watches is None:
                continue
            with contextlib.suppress(ValueError):
                watches.remove(watch)
            if not watches:
                del self._watches[job_id]
                self._missing.pop(job_id, None)
                changed = True
        if changed:
            self._report()

    def _report(self) -> None:
        """Tell the tick hook the new count now, not at the next tick (there may be none)."""
        if self._on_tick is not None:
            self._on_tick(self.account, len(self._watches), ())

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"poller:{self.account}")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def chunks(self, ids: Sequence[str]) -> list[list[str]]:
        """Split ids so each status URL stays within budget (and the optional id cap)."""
        max_ids = self._settings.status_max_ids
        chunks: list[list[str]] = []
        current: list[str] = []
        length = 0
        for job_id in ids:
            extra = len(job_id) + (1 if current else 0)
            if current and (
                length + extra > self._url_budget
                or (max_ids is not None and len(current) >= max_ids)
            ):
                chunks.append(current)
                current, length, extra = [], 0, len(job_id)
            current.append(job_id)
            length += extra
        if current:
            chunks.append(current)
        return chunks

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self._settings.poll_interval
        failures = 0
        await asyncio.sleep(interval)
        while self._watches:
            started = loop.time()
            try:
                failure = await self._tick()
            except Exception:  # a bug must not kill polling for everyone; keep going
                logger.exception("poll tick failed unexpectedly")
                failure = UpstreamFailure("bad_response", "internal error while polling")
            if failure is None:
                failures = 0
                delay = interval - (loop.time() - started)
            else:
                delay = max(
                    interval,
                    failure.retry_after or 0.0,
                    backoff_delay(failures, interval, self._settings.poll_backoff_max),
                )
                failures += 1
                logger.warning(
                    "status poll failed for account %s (%s); retrying in %.2fs",
                    self.account,
                    failure.message,
                    delay,
                )
            if delay > 0:
                await asyncio.sleep(delay)

    async def _tick(self) -> UpstreamFailure | None:
        """Poll every watched job once; return the last failure, if any chunk failed."""
        chunks = self.chunks(list(self._watches))
        if self._on_tick is not None:
            self._on_tick(self.account, len(self._watches), [len(c) for c in chunks])
        if len(chunks) == 1:
            return await self._poll_chunk(chunks[0])
        # Each chunk is handed out as soon as its own answer is in: the first chunks' streams
        # need not wait for the slowest status request of the tick.
        results = await asyncio.gather(
            *(self._poll_chunk(c) for c in chunks), return_exceptions=True
        )
        failure: UpstreamFailure | None = None
        for chunk, result in zip(chunks, results, strict=True):
            if isinstance(result, UpstreamFailure):
                failure = result
            elif isinstance(result, BaseException):  # a bug in dispatching; keep polling
                logger.error("poll of %d jobs failed unexpectedly", len(chunk), exc_info=result)
                failure = UpstreamFailure("bad_response", repr(result))
                self._report_error(chunk, failure)
        return failure

    async def _poll_chunk(self, ids: list[str]) -> UpstreamFailure | None:
        """One status request; its snapshots go to their watches at once."""
        try:
            snapshots = await self._client.status(self._token, ids, account=self.account)
        except UpstreamFailure as failure:
            self._report_error(ids, failure)
            return failure
        self._dispatch(ids, snapshots)
        return None

    def _report_error(self, ids: list[str], failure: UpstreamFailure) -> None:
        for job_id in ids:
            for watch in self._watches.get(job_id, ()):
                watch.report_error(failure)

    def _dispatch(self, chunk: list[str], snapshots: dict[str, JobSnapshot]) -> None:
        ended = False
        for job_id in chunk:
            watches = self._watches.get(job_id)
            if not watches:
                continue  # nobody waits any more (closed while the request was out)
            snapshot = snapshots.get(job_id)
            if snapshot is None:
                missed = self._missing.get(job_id, 0) + 1
                self._missing[job_id] = missed
                if missed < self._settings.missing_job_ticks:
                    continue
                snapshot = JobSnapshot(
                    job_id,
                    JobPhase.FAILED,
                    "missing",
                    "",
                    error=f"the upstream stopped reporting the job ({missed} polls in a row)",
                )
            else:
                self._missing.pop(job_id, None)
            for watch in list(watches):
                watch.deliver(snapshot)
            if snapshot.phase.terminal:
                self._watches.pop(job_id, None)
                self._missing.pop(job_id, None)
                ended = True
        if ended:
            self._report()


class PollerHub:
    """One :class:`AccountPoller` per upstream token, created on first use."""

    def __init__(
        self,
        client: JobsClient,
        settings: UpstreamSettings,
        base_url: str,
        on_tick: TickHook | None = None,
    ) -> None:
        self._client = client
        self._settings = settings
        self._base_url_length = len(base_url)
        self._on_tick = on_tick
        self._pollers: dict[str, AccountPoller] = {}

    def poller(self, token: str, account: str) -> AccountPoller:
        poller = self._pollers.get(token)
        if poller is None:
            poller = AccountPoller(
                self._client, token, account, self._settings, self._base_url_length, self._on_tick
            )
            self._pollers[token] = poller
        return poller

    @property
    def jobs_in_flight(self) -> int:
        return sum(p.jobs_in_flight for p in self._pollers.values())

    def wake_all(self) -> None:
        for poller in self._pollers.values():
            poller.wake_all()

    def accounts(self) -> list[AccountPoller]:
        return list(self._pollers.values())

    async def aclose(self) -> None:
        for poller in self._pollers.values():
            await poller.aclose()
