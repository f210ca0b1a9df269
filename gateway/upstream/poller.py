"""Coalesced polling: one status request per tick serves every job in flight for an account.

Requests do not poll. Each one opens a :class:`JobWatch` on its job ids; the account's
:class:`AccountPoller` asks, every ``poll_interval``, for the status of all watched ids at once:
one request per lane of ids short enough for one URL, the lanes spread over the tick
(:mod:`gateway.upstream.lanes`), and hands each watch the latest snapshot of its own jobs.
Because the log is cumulative, only the latest snapshot matters: a slow reader never falls
behind, it just sees a longer log next time.

A job leaves the poller when it ends, or when the last watch on it closes (the client went
away, or its answer was already complete). Failed polls back off with jitter; jobs are not
failed for it: each request's own deadline decides when to give up.

Across processes (several workers or replicas sharing Redis), a :class:`~gateway.upstream.relay.
PollRelay` makes one process per account the poller: it also polls the jobs other processes
follow (``remote`` here) and relays their news; the others poll nothing and are handed their
snapshots (:meth:`AccountPoller.deliver_relayed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol

from gateway.config import UpstreamSettings
from gateway.upstream.client import JobsClient, backoff_delay
from gateway.upstream.errors import UpstreamFailure
from gateway.upstream.lanes import Lane, Lanes
from gateway.upstream.models import JobPhase, JobSnapshot

logger = logging.getLogger("gateway.poller")

#: Called before every status request: (account name, jobs in flight, ids the request carries),
#: and with no ids whenever jobs leave between requests, so a gauge fed by it reaches zero.
TickHook = Callable[[str, int, Sequence[int]], None]


class Relay(Protocol):
    """What an account's poller needs of the cross-process relay (gateway/upstream/relay.py)."""

    @property
    def leading(self) -> bool:
        """True when this process polls for the account (or polls alone: Redis is away)."""

    def publish(self, relayed: list[tuple[JobSnapshot, frozenset[str]]]) -> None:
        """Hand each snapshot to the processes that follow its job."""

    def followed(self) -> None:
        """A request here follows a new job (register it with the others soon)."""

    async def aclose(self) -> None: ...


class RelayFactory(Protocol):
    """Builds each account's relay; closed with the hub."""

    def __call__(self, poller: AccountPoller, token: str) -> Relay: ...

    async def aclose(self) -> None: ...


class JobWatch:
    """One request's window on its jobs: the newest snapshot of each and a way to await change."""

    __slots__ = (
        "_changed",
        "_poller",
        "_timer",
        "_until",
        "_waiter",
        "ids",
        "latest",
        "poll_error",
    )

    def __init__(self, poller: AccountPoller, ids: Sequence[str]) -> None:
        self._poller = poller
        self.ids = tuple(ids)
        self.latest: dict[str, JobSnapshot] = {}
        self.poll_error: UpstreamFailure | None = None
        self._changed: dict[str, None] = {}
        self._waiter: asyncio.Future[None] | None = None
        # One timer for the waits of :meth:`changes`, moved on rather than made per wait: a
        # stream waits four times a second, and its limit (the keepalive) is seconds away.
        self._timer: asyncio.TimerHandle | None = None
        self._until = 0.0

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
            self._until = until = loop.time() + within
            timer = self._timer
            if timer is None or timer.when() > until:
                if timer is not None:
                    timer.cancel()
                self._timer = loop.call_at(until, self._expire)
            try:
                await waiter
            finally:
                self._waiter = None
        changed = [self.latest[job_id] for job_id in self._changed]
        self._changed.clear()
        return changed

    def _expire(self) -> None:
        """The timer fired: end the wait if its limit passed, else wait on to that limit."""
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        loop = waiter.get_loop()
        if loop.time() + 0.001 < self._until:  # set for an earlier wait, with a nearer limit
            self._timer = loop.call_at(self._until, self._expire)
        else:
            waiter.set_result(None)

    def release(self, job_id: str) -> None:
        """This request needs no more news of ``job_id`` (its answer is complete)."""
        self._poller.unwatch(self, (job_id,))

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._poller.unwatch(self, self.ids)


class AccountPoller:
    """The polling of one upstream account (one token): one loop per lane of its jobs."""

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
        url_budget = settings.status_url_max_length - base_url_length - len("/jobs/")
        self.lanes = Lanes(settings.poll_interval, url_budget, settings.status_max_ids)
        self._on_tick = on_tick
        self._watches: dict[str, list[JobWatch]] = {}
        #: Jobs other processes follow, polled here while this process leads: job -> processes.
        self._remote: dict[str, frozenset[str]] = {}
        self._missing: dict[str, int] = {}
        #: The last snapshot each watch here and each process relayed to was handed, by job:
        #: an unchanged job is skipped (neither parsed again nor relayed).
        self._last: dict[str, JobSnapshot] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.relay: Relay | None = None

    @property
    def jobs_in_flight(self) -> int:
        return len(self._watches)

    @property
    def polling(self) -> bool:
        """False while another process polls this account and relays its news here."""
        return self.relay is None or self.relay.leading

    def remote_processes(self, job_id: str) -> frozenset[str]:
        """The other processes known to follow ``job_id`` (while this one leads)."""
        return self._remote.get(job_id, frozenset())

    def local_ids(self) -> list[str]:
        """The jobs this process's requests follow."""
        return list(self._watches)

    def set_remote(self, remote: dict[str, frozenset[str]]) -> None:
        """The jobs other processes follow (while this one leads): poll them too."""
        for job_id in [j for j in self._remote if j not in remote]:
            del self._remote[job_id]
            self._drop_if_unwanted(job_id)
        self.add_remote(remote)

    def add_remote(self, remote: dict[str, frozenset[str]]) -> None:
        """More jobs (or more processes of a job) other processes follow: poll them too."""
        for job_id, processes in remote.items():
            before = self._remote.get(job_id)
            if before == processes:
                continue
            if before is not None or job_id in self._watches:
                self._last.pop(job_id, None)  # the next poll hands the newcomers the job
            self._remote[job_id] = processes
            if before is None and job_id not in self._watches:
                self._place(job_id)

    def deliver_relayed(self, snapshot: JobSnapshot) -> None:
        """A snapshot the leading process polled for a job followed here."""
        watches = self._watches.get(snapshot.id)
        if watches and self._deliver(snapshot, watches):
            self._report()

    @contextlib.contextmanager
    def watch(self, ids: Sequence[str]) -> Iterator[JobWatch]:
        watch = JobWatch(self, ids)
        new = False
        for job_id in watch.ids:
            watches = self._watches.get(job_id)
            if watches is None:
                self._watches[job_id] = [watch]
                if job_id not in self._remote:
                    self._place(job_id)
                new = True
            else:
                watches.append(watch)
                self._last.pop(job_id, None)  # the next poll hands the newcomer the job
        if new and self.relay is not None:
            self.relay.followed()
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
                self._drop_if_unwanted(job_id)
                changed = True
        if changed:
            self._report()

    def _drop_if_unwanted(self, job_id: str) -> None:
        """Stop polling ``job_id`` once neither a request here nor another process follows it."""
        if job_id not in self._watches and job_id not in self._remote:
            self._missing.pop(job_id, None)
            self._last.pop(job_id, None)
            self.lanes.remove(job_id)

    def _place(self, job_id: str) -> None:
        lane = self.lanes.place(job_id, asyncio.get_running_loop().time())
        if lane is not None:
            task = asyncio.create_task(self._run(lane), name=f"poller:{self.account}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _forget(self, job_id: str) -> None:
        """The job ended: nobody here or elsewhere needs news of it."""
        self._watches.pop(job_id, None)
        self._remote.pop(job_id, None)
        self._missing.pop(job_id, None)
        self._last.pop(job_id, None)
        self.lanes.remove(job_id)

    def _report(self) -> None:
        """Tell the tick hook the new count now, not at the next tick (there may be none)."""
        if self._on_tick is not None:
            self._on_tick(self.account, len(self._watches), ())

    async def aclose(self) -> None:
        if self.relay is not None:
            await self.relay.aclose()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, lane: Lane) -> None:
        """Poll one lane at its phase of every tick until it has no jobs left."""
        loop = asyncio.get_running_loop()
        interval = self._settings.poll_interval
        failures = 0
        while True:
            delay = lane.due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if self.lanes.close_if_empty(lane):
                return
            if not self.polling:  # another process polls and relays: keep the phase, ask nothing
                lane.due = max(lane.due + interval, loop.time())
                continue
            try:
                failure = await self._poll(list(lane.ids))
            except Exception:  # a bug must not kill polling for everyone; keep going
                logger.exception("poll tick failed unexpectedly")
                failure = UpstreamFailure("bad_response", "internal error while polling")
            now = loop.time()
            if failure is None:
                failures = 0
                # Keep the lane's phase; an answer slower than a tick is polled again at once.
                lane.due = max(lane.due + interval, now)
                continue
            delay = max(
                interval,
                failure.retry_after or 0.0,
                backoff_delay(failures, interval, self._settings.poll_backoff_max),
            )
            failures += 1
            lane.due = now + delay
            logger.warning(
                "status poll failed for account %s (%s); retrying in %.2fs",
                self.account,
                failure.message,
                delay,
            )

    async def _poll(self, ids: list[str]) -> UpstreamFailure | None:
        """One status request; its snapshots go to their watches at once."""
        if self._on_tick is not None:
            self._on_tick(self.account, len(self._watches), (len(ids),))
        try:
            snapshots = await self._client.status(
                self._token, ids, account=self.account, previous=self._last
            )
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
        relayed: list[tuple[JobSnapshot, frozenset[str]]] = []
        for job_id in chunk:
            watches = self._watches.get(job_id)
            remote = self._remote.get(job_id)
            if not watches and not remote:
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
            if snapshot is self._last.get(job_id):
                continue  # nothing new (the client reused the last snapshot)
            self._last[job_id] = snapshot
            if remote:
                relayed.append((snapshot, remote))
            ended = self._deliver(snapshot, watches or ()) or ended
        if relayed and self.relay is not None:
            self.relay.publish(relayed)
        if ended:
            self._report()

    def _deliver(self, snapshot: JobSnapshot, watches: Sequence[JobWatch]) -> bool:
        """Hand ``snapshot`` to this process's watches; True when it ended the job."""
        for watch in list(watches):
            watch.deliver(snapshot)
        if snapshot.phase.terminal:
            self._forget(snapshot.id)
            return True
        return False


class PollerHub:
    """One :class:`AccountPoller` per upstream token, created on first use."""

    def __init__(
        self,
        client: JobsClient,
        settings: UpstreamSettings,
        base_url: str,
        on_tick: TickHook | None = None,
        relay_factory: RelayFactory | None = None,
    ) -> None:
        self._client = client
        self._settings = settings
        self._base_url_length = len(base_url)
        self._on_tick = on_tick
        self._relay_factory = relay_factory
        self._pollers: dict[str, AccountPoller] = {}

    def poller(self, token: str, account: str) -> AccountPoller:
        poller = self._pollers.get(token)
        if poller is None:
            poller = AccountPoller(
                self._client, token, account, self._settings, self._base_url_length, self._on_tick
            )
            if self._relay_factory is not None:
                poller.relay = self._relay_factory(poller, token)
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
        if self._relay_factory is not None:
            await self._relay_factory.aclose()
