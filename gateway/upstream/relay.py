"""One poller per upstream account, whatever the number of processes (Redis).

Without Redis each process polls the jobs of its own requests: with four workers the upstream
sees four pollers of one account. With Redis (``redis.url``) and ``upstream.shared_polling``,
the processes of every replica share the polling of each account:

- each process registers the job ids its requests follow in the account's sorted set (score:
  when the registration lapses), refreshed while it follows them, removed when it stops;
- every tick each process tries to take or renew the account's poller *lease*; the holder polls
  every registered id in its usual coalesced lanes, and a lease whose holder died lapses within
  a few ticks, so another process takes over. Between ticks a thread renews it
  (gateway/upstream/lease.py) so that an event loop stalled for a second does not hand it over
  (each move meant whole logs resent and, for a while, two pollers); a holder that finds it gone
  stops polling and relaying the others' jobs at once;
- the holder learns every registration once a tick, and only the newest on the early ticks new
  jobs bring; it relays only snapshots that changed (the poller's identity shortcut);
- the holder hands every other process the news of the jobs *that* process follows: the new log
  text since what it sent before (an offset and the text; the whole log after a rewrite or a
  change of holder) and the status, as one entry per tick on a Redis stream of that process;
- the others poll nothing and read their stream.

Why streams rather than pub/sub: each entry is a delta on the previous one, so a lost entry
would leave a hole in a client's text. A pub/sub message is lost when its subscriber's
connection is busy or reconnecting; a stream entry waits for its reader (bounded by
``MAXLEN``), and a reader resumes after the last id it read. Should a reader still find a gap
(its offset is past the text it holds), it asks the upstream for the status of the jobs of that
entry with gaps itself, in as few requests as their ids allow.

When Redis fails, every process polls its own jobs again until it answers: never a request left
waiting for news that cannot come.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, cast

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.upstream.client import JobsClient
from gateway.upstream.errors import UpstreamFailure
from gateway.upstream.lease import LeaseKeeper
from gateway.upstream.models import JobPhase, JobSnapshot, parse_json
from gateway.upstream.poller import AccountPoller

logger = logging.getLogger("gateway.poller")

#: Take the lease when free, or renew it when this process holds it; 1 when held after the call.
_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""
#: Give the lease up at shutdown, only if still this process's.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
#: Told of shared-polling events (lease_taken, lease_lost, gap) and how many: the metrics.
EventHook = Callable[[str, int], None]
#: Entries kept per process stream: a reader more than this many ticks behind loses entries.
STREAM_MAXLEN = 10_000
#: A job that ended is not polled again for a registration that has not lapsed yet.
ENDED_MEMORY_SECONDS = 30.0
#: A stalled event loop keeps its leases this long at least (gateway/upstream/lease.py).
STALL_SECONDS = 3.0


def encode_entry(jobs: list[list[Any]]) -> bytes:
    """A stream entry's jobs as JSON: orjson (the leader encodes every job's news each tick),
    or the standard library for text orjson refuses (a lone surrogate the upstream escaped)."""
    try:
        return orjson.dumps(jobs)
    except orjson.JSONEncodeError:
        return json.dumps(jobs, separators=(",", ":")).encode()


class PollRelay:
    """This process's part in polling one account: lease, registrations, and the relay."""

    def __init__(
        self,
        redis: aioredis.Redis,
        poller: AccountPoller,
        client: JobsClient,
        token: str,
        *,
        prefix: str,
        process: str,
        interval: float,
        keeper: LeaseKeeper,
        on_event: EventHook | None = None,
    ) -> None:
        self._redis = redis
        self._keeper = keeper
        self._on_event = on_event
        self._poller = poller
        self._client = client
        self._token = token
        self.process = process
        self.interval = interval
        account = hashlib.sha256(token.encode()).hexdigest()[:16]  # never the token itself
        base = f"{prefix}poll:{{{account}}}:"
        self._lease_key = base + "lease"
        self._jobs_key = base + "jobs"
        self._stream_prefix = base + "to:"
        self.lease_ms = keeper.lease_ms
        self.registration_ms = int(max(10 * interval, 5.0) * 1000)
        self._lease = redis.register_script(_LEASE)
        self._release = redis.register_script(_RELEASE)
        # Until the first tick has asked Redis, poll: a request is never left waiting for it.
        self._alone = True  # polling alone: no answer from Redis yet, or Redis failed
        self._led = False  # held the lease at the last tick (or since, per the keeper)
        self.lease_changes = 0  # times this process took the lease after another held it
        self._swept_at = -1e9  # monotonic time the relayed logs of jobs gone were dropped
        self._learned_at = -1e9  # monotonic time of the last learning of every registration
        self._learned_ms = 0  # wall-clock ms of the last learning (full or of the newest)
        self._redis_ok = True
        self._wake = asyncio.Event()
        self._registered: dict[str, float] = {}  # job -> monotonic time of its last refresh
        self._sent: dict[tuple[str, str], str] = {}  # (process, job) -> the log it holds
        self._held: dict[str, str] = {}  # job -> the log relayed here so far
        self.gaps = 0  # entries that did not extend what was held (asked upstream directly)
        self._ended: dict[str, float] = {}  # job -> monotonic time it ended here
        self._outbox: list[dict[str, list[list[Any]]]] = []
        self._outbox_ready = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._spawn(self._coordinate(), "relay-coordinate")
        self._spawn(self._read(), "relay-read")
        self._spawn(self._send(), "relay-send")

    @property
    def leading(self) -> bool:
        """Does this process poll the account (the lease is its own, or it polls alone)?"""
        return self._alone or self._keeper.holds(self._lease_key)

    def _lost_lease(self) -> None:
        """The keeper found the lease held elsewhere: stop polling the others' jobs now."""
        if self._alone:
            return
        self._event("lease_lost", 1)
        self._led = False
        self._sent.clear()
        self._poller.set_remote({})

    # -- the leader's side ------------------------------------------------------------------

    def publish(self, relayed: list[tuple[JobSnapshot, frozenset[str]]]) -> None:
        """One stream entry per process with the news of its jobs (called after each poll)."""
        if not self.leading:
            return  # polled before the lease passed on: the new holder sends these jobs whole
        entries: dict[str, list[list[Any]]] = {}
        now = time.monotonic()
        for snapshot, processes in relayed:
            if snapshot.phase.terminal:
                self._ended[snapshot.id] = now
            for process in processes:
                if process == self.process:
                    continue
                key = (process, snapshot.id)
                before = self._sent.get(key, "")
                log = snapshot.log
                offset = len(before) if log.startswith(before) else 0
                if snapshot.phase.terminal:
                    self._sent.pop(key, None)
                else:
                    self._sent[key] = log
                entries.setdefault(process, []).append(
                    [
                        snapshot.id,
                        snapshot.phase.value,
                        snapshot.status,
                        offset,
                        log[offset:],
                        snapshot.vm_status,
                        snapshot.runtime,
                        snapshot.error,
                    ]
                )
        if entries:
            self._outbox.append(entries)
            self._outbox_ready.set()

    async def _send(self) -> None:
        """Send the outbox in order: each entry extends the one before, so none may overtake."""
        while not self._closed:
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            batches, self._outbox = self._outbox, []
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for entries in batches:
                        for process, jobs in entries.items():
                            stream = self._stream_prefix + process
                            pipe.xadd(
                                stream,
                                {"jobs": encode_entry(jobs)},
                                maxlen=STREAM_MAXLEN,
                                approximate=True,
                            )
                    for process in {p for entries in batches for p in entries}:
                        pipe.pexpire(self._stream_prefix + process, self.registration_ms * 2)
                    await pipe.execute()
            except (RedisError, OSError) as exc:
                self._lost_redis(exc)

    # -- every process's side ---------------------------------------------------------------

    def followed(self) -> None:
        """A request here follows a new job: register it now, not at the next tick."""
        self._wake.set()

    async def _coordinate(self) -> None:
        """Every tick: refresh registrations, take or renew the lease, learn the others' jobs."""
        while not self._closed:
            try:
                await self._tick()
                if not self._redis_ok:
                    logger.warning("shared polling: Redis answers again")
                self._redis_ok = True
            except (RedisError, OSError) as exc:
                self._lost_redis(exc)
            except Exception:  # a bug must not stop polling: poll alone meanwhile
                logger.exception("shared polling tick failed")
                self._alone = True
            # An early tick for new jobs comes at most ten times per tick.
            await asyncio.sleep(self.interval / 10)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval * 0.9)
            self._wake.clear()

    async def _tick(self) -> None:
        now_ms = int(time.time() * 1000)
        local = set(self._poller.local_ids())
        mono = time.monotonic()
        refresh_after = self.registration_ms / 3000
        fresh = [j for j in local if mono - self._registered.get(j, -1e9) > refresh_after]
        gone = [j for j in self._registered if j not in local]
        async with self._redis.pipeline(transaction=False) as pipe:
            if fresh:
                until = now_ms + self.registration_ms
                pipe.zadd(self._jobs_key, {f"{self.process} {j}": until for j in fresh})
                pipe.pexpire(self._jobs_key, self.registration_ms * 2)
            if gone:
                pipe.zrem(self._jobs_key, *(f"{self.process} {j}" for j in gone))
            await pipe.execute()
        for job_id in fresh:
            self._registered[job_id] = mono
        for job_id in gone:
            del self._registered[job_id]
        if mono - self._swept_at > self.interval:  # once a tick, not once per entry read
            self._swept_at = mono
            for job_id in [j for j in self._held if j not in local]:
                del self._held[job_id]
        held = await cast(
            Awaitable[int],
            self._lease(keys=[self._lease_key], args=[self.process, self.lease_ms]),
        )
        self._alone = False
        if not held:
            self._keeper.drop(self._lease_key)
            self._led = False
            self._poller.set_remote({})
            return
        self._keeper.hold(self._lease_key, self._lost_lease)
        if not self._led:
            self._learned_at = -1e9  # learn every registration now, not only the newest
            self._led = True
            self.lease_changes += 1
            self._event("lease_taken", 1)
            self._sent.clear()  # what others hold is unknown: send whole logs first
            logger.info("shared polling: this process polls account %s", self._poller.account)
        await self._learn_remote(now_ms)

    async def _learn_remote(self, now_ms: int) -> None:
        """The jobs other processes follow, from their registrations that have not lapsed.

        Once a tick all of them (which also drops the ones that lapsed or were withdrawn); on
        the early ticks new jobs bring, only the registrations made since the last learning
        (a registration's score is when it was made plus ``registration_ms``): that work does
        not grow with every job registered.
        """
        mono = time.monotonic()
        if mono - self._learned_at < self.interval:
            since = self._learned_ms + self.registration_ms - 1
            added: list[bytes] = await self._redis.zrangebyscore(  # type: ignore[assignment]
                self._jobs_key, since, "+inf"
            )
            self._learned_ms = now_ms
            fresh: dict[str, set[str]] = {}
            for member in added:
                process, _, job_id = member.decode().partition(" ")
                if process != self.process and job_id and job_id not in self._ended:
                    known = self._poller.remote_processes(job_id)
                    fresh.setdefault(job_id, set(known)).add(process)
            self._poller.add_remote({j: frozenset(p) for j, p in fresh.items()})
            return
        self._learned_at, self._learned_ms = mono, now_ms
        pipe = self._redis.pipeline(transaction=False)
        pipe.zremrangebyscore(self._jobs_key, "-inf", now_ms)
        pipe.zrangebyscore(self._jobs_key, now_ms, "+inf")
        _, members = await pipe.execute()
        for job_id in [j for j, at in self._ended.items() if mono - at > ENDED_MEMORY_SECONDS]:
            del self._ended[job_id]
        remote: dict[str, set[str]] = {}
        for member in members:
            process, _, job_id = member.decode().partition(" ")
            if process != self.process and job_id and job_id not in self._ended:
                remote.setdefault(job_id, set()).add(process)
        self._poller.set_remote({j: frozenset(p) for j, p in remote.items()})
        for key in [k for k in self._sent if k[1] not in remote]:
            del self._sent[key]

    async def _read(self) -> None:
        """Read the news the leading process sends this one and hand it to the poller."""
        stream = self._stream_prefix + self.process
        last = "0"
        block_ms = int(max(self.interval * 4, 1.0) * 1000)
        while not self._closed:
            try:
                answer: list[Any] = await self._redis.xread(  # type: ignore[assignment]
                    {stream: last}, count=100, block=block_ms
                )
            except (RedisError, OSError) as exc:
                self._lost_redis(exc)
                await asyncio.sleep(self.interval)
                continue
            for _, entries in answer or ():
                for entry_id, fields in entries:
                    last = entry_id.decode()
                    await self._apply(parse_json(fields[b"jobs"]))

    async def _apply(self, jobs: list[list[Any]]) -> None:
        gapped: list[str] = []
        for job_id, phase, status, offset, text, vm_status, runtime, error in jobs:
            held = self._held.get(job_id, "")
            if offset > len(held):  # an entry was lost: ask the upstream, directly
                gapped.append(job_id)
                continue
            self._take(
                JobSnapshot(
                    job_id, JobPhase(phase), status, held[:offset] + text, vm_status, runtime, error
                )
            )
        if gapped:
            self.gaps += len(gapped)
            self._event("gap", len(gapped))
            logger.info("shared polling: %d relayed jobs had gaps; asking upstream", len(gapped))
            for snapshot in await self._fetch(gapped):
                self._take(snapshot)

    def _take(self, snapshot: JobSnapshot) -> None:
        if snapshot.phase.terminal:
            self._held.pop(snapshot.id, None)
        else:
            self._held[snapshot.id] = snapshot.log
        self._poller.deliver_relayed(snapshot)

    async def _fetch(self, job_ids: list[str]) -> list[JobSnapshot]:
        """The gapped jobs of one entry, in as few status requests as their ids allow."""
        found: list[JobSnapshot] = []
        for chunk in self._poller.lanes.chunks(job_ids):
            try:
                snapshots = await self._client.status(
                    self._token, chunk, account=self._poller.account
                )
            except UpstreamFailure:
                continue  # the next entry's gap asks again
            found.extend(snapshots.values())
        return found

    # -- plumbing ---------------------------------------------------------------------------

    def _event(self, event: str, count: int) -> None:
        if self._on_event is not None:
            self._on_event(event, count)

    def _lost_redis(self, exc: BaseException) -> None:
        """Redis failed: poll this process's own jobs until it answers again."""
        if self._redis_ok:
            logger.warning("shared polling: Redis unavailable (%s); polling alone", exc)
        self._redis_ok = False
        self._alone = True
        self._led = False
        self._poller.set_remote({})  # their news cannot reach them now

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        """Stop, give the lease up and drop this process's registrations at once."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        self._keeper.drop(self._lease_key)
        with contextlib.suppress(RedisError, OSError):
            await self._release(keys=[self._lease_key], args=[self.process])
            if self._registered:
                await self._redis.zrem(
                    self._jobs_key, *(f"{self.process} {j}" for j in self._registered)
                )


class RelayFactory:
    """Builds each account's :class:`PollRelay` on one Redis client for the whole process."""

    def __init__(
        self,
        url: str,
        prefix: str,
        client: JobsClient,
        interval: float,
        timeout: float,
        on_event: EventHook | None = None,
    ) -> None:
        self.process = uuid.uuid4().hex[:16]
        self._url = url
        self._timeout = timeout
        self._keeper: LeaseKeeper | None = None
        self._on_event = on_event
        # Blocking reads hold a connection each: the pool waits for one rather than failing.
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=64, timeout=timeout, socket_connect_timeout=timeout
        )
        self._redis = aioredis.Redis(connection_pool=pool)
        self._prefix = prefix
        self._client = client
        self._interval = interval

    def keeper(self) -> LeaseKeeper:
        """The process's lease keeper, started with the first relay (inside the event loop)."""
        if self._keeper is None:
            self._keeper = LeaseKeeper(
                self._url,
                self.process,
                lease_ms=int(max(3 * self._interval, 1.0) * 1000),
                stall_seconds=max(10 * self._interval, STALL_SECONDS),
                timeout=self._timeout,
                loop=asyncio.get_running_loop(),
            )
        return self._keeper

    def __call__(self, poller: AccountPoller, token: str) -> PollRelay:
        return PollRelay(
            self._redis,
            poller,
            self._client,
            token,
            prefix=self._prefix,
            process=self.process,
            interval=self._interval,
            keeper=self.keeper(),
            on_event=self._on_event,
        )

    async def aclose(self) -> None:
        if self._keeper is not None:
            await self._keeper.aclose()
        await self._redis.aclose()
