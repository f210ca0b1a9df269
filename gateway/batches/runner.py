"""The batch runner: every line of a batch through the front desk, durably, under a lease.

Each gateway runs the active batches whose lease it holds (``batches.lease_seconds``,
renewed while it runs them; a stopped gateway's batches are taken over by the next scan of
another or a restarted one). A batch's lines are started many at once, so their submissions
meet in the upstream batcher's group commit and go up as multi-input POSTs; each line is one
:meth:`FrontDesk.answer` call marked as a batch line (job slots in the batch class, within
``batches.share`` of the account's cap; one ledger row per line under the door's route). The
lines in flight are also bounded by the key's and its team's ``max_concurrent`` (see
:meth:`Runner._gate`), so the limits wait lines rather than refuse them.

A line's job ids are stored the moment the upstream gives them (:meth:`BatchStore.submitted`):
after a restart such a line is followed, not submitted again. A line whose job fails is
queued again up to ``batches.max_attempts`` times, then written to the error file.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.batches.files import FileStore
from gateway.batches.lines import LineDoor
from gateway.batches.metrics import BatchMetrics
from gateway.batches.results import PENDING, write_results
from gateway.batches.store import BatchStore, Line, StoredBatch
from gateway.config import KeySettings
from gateway.config_batches import BatchSettings
from gateway.errors import GatewayError, InternalError, RateLimited
from gateway.keys.digests import owner
from gateway.serving.desk import Call, FrontDesk

if TYPE_CHECKING:
    from gateway.runtime import Runtime

logger = logging.getLogger("gateway.batches")

#: Seconds between deletions of the files past ``files.retention_hours``.
PURGE_INTERVAL = 60.0
#: Lines read from the database at a time.
PAGE = 500


def retryable(error: GatewayError) -> bool:
    """A failure another try may mend: the grid's (5xx), a full queue or a deadline (429)."""
    return error.status_code >= 500 or error.status_code == 429


@dataclass(slots=True)
class Gate:
    """One bound on the lines this gateway runs at once: an account's batch share of its job
    slots, or a key's or a team's ``max_concurrent``; and how many run now."""

    capacity: int
    in_use: int = 0
    #: Monotonic time before which no wave starts (the key was rate limited).
    paused_until: float = 0.0

    def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, time.monotonic() + seconds)


@dataclass(frozen=True, slots=True)
class Gates:
    """The bounds one batch's lines pass together (its account's, its key's, its team's):
    a running line holds a place in each, so every bound counts the lines of all the batches
    it covers."""

    gates: tuple[Gate, ...]

    @property
    def capacity(self) -> int:
        return min(g.capacity for g in self.gates)

    @property
    def free(self) -> int:
        return max(0, min(g.capacity - g.in_use for g in self.gates))

    @property
    def paused_until(self) -> float:
        return max(g.paused_until for g in self.gates)

    def enter(self, lines: int = 1) -> None:
        for gate in self.gates:
            gate.in_use += lines

    def leave(self, lines: int = 1) -> None:
        for gate in self.gates:
            gate.in_use -= lines

    def pause(self, seconds: float) -> None:
        for gate in self.gates:
            gate.pause(seconds)


class Wave:
    """Lines started together: each is planned, then all go to the desk in one turn of the
    event loop, so their submissions meet in the batcher (few POSTs, many inputs each)."""

    def __init__(self, size: int) -> None:
        self.waiting = size
        self.go = asyncio.Event()

    def ready(self) -> None:
        self.waiting -= 1
        if self.waiting <= 0:
            self.go.set()

    async def ready_and_wait(self) -> None:
        self.ready()
        await self.go.wait()


class Runner:
    """Runs this gateway's share of the active batches; started and closed by the service."""

    def __init__(
        self,
        store: BatchStore,
        files: FileStore,
        settings: BatchSettings,
        doors: Mapping[str, LineDoor],
    ) -> None:
        self.store = store
        self.files = files
        self.settings = settings
        self.doors = doors
        self.owner = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        self._rt: Runtime | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._gates: dict[tuple[str, str], Gate] = {}
        self._loop: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.metrics = BatchMetrics.create(None)  # on the gateway's registry once started
        #: Lines not yet answered in the batches this gateway runs, by batch.
        self._queued: dict[str, int] = {}
        self._purged = 0.0
        self._stopping = False
        self._finishing: set[asyncio.Future[None]] = set()

    def start(self, runtime: Runtime) -> None:
        self._rt = runtime
        self.metrics = BatchMetrics.create(runtime.metrics.registry)
        self._loop = asyncio.create_task(self._scan_forever())

    def wake(self) -> None:
        """A batch was created or cancelled here: look now rather than at the next scan."""
        self._wake.set()

    async def aclose(self) -> None:
        """Stop: no new wave starts; the lines in flight may end (within the shutdown grace),
        so none is left half-submitted; the batches' leases go to the next gateway at once."""
        self._stopping = True
        if self._loop is not None:
            self._loop.cancel()
        running = list(self._tasks.values())
        if running and self._rt is not None:
            await asyncio.wait(running, timeout=self._rt.settings.server.graceful_shutdown_seconds)
        tasks = [t for t in (self._loop, *self._tasks.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._finishing:  # answered lines being stored done
            await asyncio.wait(list(self._finishing), timeout=10)
        for batch_id in list(self._tasks):
            with contextlib.suppress(Exception):  # handed over at once, not after the lease
                await self.store.release(batch_id, self.owner)

    # ------------------------------------------------------------------ leases

    async def _scan_forever(self) -> None:
        while True:
            try:
                await self._scan()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("batch scan failed; trying again")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.scan_interval):
                    await self._wake.wait()
            self._wake.clear()

    async def _scan(self) -> None:
        if not self.store.is_open:
            return  # not open yet (the database was unreachable at start-up)
        now, lease = time.time(), self.settings.lease_seconds
        if now - self._purged >= PURGE_INTERVAL:  # files past their retention
            self._purged = now
            await self.files.purge(now)
            await self.store.purge(now - self.files.settings.retention_hours * 3600)
        held = await self.store.renew(list(self._tasks), self.owner, now, lease)
        for batch_id in set(self._tasks) - set(held):  # taken over by another: let it go
            self._tasks.pop(batch_id).cancel()
        for batch_id in list(self._queued):
            if batch_id in self._tasks:
                self._queued[batch_id] = (await self.store.counts(batch_id)).pending
            else:
                del self._queued[batch_id]
        self.metrics.queued.set(sum(self._queued.values()))
        for batch_id in await self.store.claimable(self.owner, now):
            if batch_id not in self._tasks and await self.store.claim(
                batch_id, self.owner, now, lease
            ):
                task = asyncio.create_task(self._run(batch_id))
                self._tasks[batch_id] = task
                self._queued[batch_id] = 0
                task.add_done_callback(functools.partial(_drop, self._tasks, batch_id))

    # ------------------------------------------------------------------ a batch

    async def _run(self, batch_id: str) -> None:
        try:
            await self._run_batch(batch_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("batch %s failed; it is taken up again", batch_id)
            await self.store.release(batch_id, self.owner)

    async def _run_batch(self, batch_id: str) -> None:
        rt = self._rt
        assert rt is not None
        batch = await self.store.get(batch_id, None, None)
        if batch is None:
            return
        door = self.doors[batch.door]
        key = rt.keys.by_name(batch.key_name)
        if key is not None and owner(key) != batch.key_id:  # the name, reused by another key
            logger.warning(
                "batch %s: the key named %r is not the one that made it (the name was reused): "
                "the batch ends, its remaining lines unrun",
                batch.id, batch.key_name,
            )  # fmt: skip
            key = None  # never run under another identity: it ends, as for a removed key
        if batch.status == "validating":
            batch.status = "in_progress"
            batch.body.setdefault("in_progress_at", int(time.time()))
            await self.store.save(batch, was=("validating",))
        running: dict[int, asyncio.Task[None]] = {}
        gate = self._gate(rt, key)
        while True:
            if rt.shutting_down or self._stopping:  # no new wave; the lines in flight end
                await asyncio.gather(*running.values(), return_exceptions=True)
                await self.store.release(batch_id, self.owner)  # the next gateway, at once
                return
            batch = await self.store.get(batch_id, None, None) or batch
            ending = _ending(batch, key)
            if ending is not None:
                await self.store.abandon(batch_id, ending)
                await asyncio.gather(*running.values(), return_exceptions=True)
                await self.finalize(batch, door, "cancelled" if ending == "cancelled" else ending)
                return
            assert key is not None
            todo = [
                line
                for line in await self.store.lines(batch_id, PENDING, PAGE)
                if line.n not in running
            ]
            if not todo and not running:
                await self.finalize(batch, door, "completed")
                return
            # Lines start in waves (half the gate free, or none running): started together,
            # their submissions meet in the batcher and go up as a few multi-input POSTs.
            free = gate.free
            ready = time.monotonic() >= gate.paused_until
            if ready and todo and (free >= max(1, gate.capacity // 2) or (free and not running)):
                lines = todo[:free]
                # The places are taken before the write: another batch's turn meanwhile (one
                # of the same account, key or team) must see them taken, not start lines the
                # key's or team's limit would refuse.
                gate.enter(len(lines))
                try:
                    await self._mark_submitting(batch, lines)
                except BaseException:
                    gate.leave(len(lines))
                    raise
                wave = Wave(len(lines))
                for line in lines:
                    task = asyncio.create_task(self._line(batch, door, key, line, gate, wave))
                    running[line.n] = task
                    task.add_done_callback(functools.partial(_drop, running, line.n))
            if running:
                await asyncio.wait(
                    list(running.values()),
                    timeout=self.settings.scan_interval,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            else:  # the account's batch lines are all taken (by its other batches)
                await asyncio.sleep(self.settings.scan_interval / 4)

    def _gate(self, rt: Runtime, key: KeySettings | None) -> Gates:
        """The bounds on a key's lines started at once: its account's batch share of job
        slots (more would only wait in its queue, in the way of live requests' places), its
        own ``max_concurrent`` and its team's (more would only be refused, 429, and retried).

        Each bound is one gate kept by what its limit counts: the account's by upstream token,
        the key's by key name, the team's by team name. Two keys of one account with different
        limits thus share the account's gate and each keeps its own: neither the first key's
        limit holds the other back (as a gate per token set by whichever batch came first did)
        nor does the larger let the smaller's lines be refused. A gate's capacity follows the
        limits each time a batch starts running."""
        token = key.upstream_token if key is not None else ""
        most = self.settings.lines_in_flight
        if key is not None:
            capacity = rt.completions.slots(token).batch_capacity
            most = min(most, capacity) if capacity is not None else most
        bounds = [(("account", token), most)]
        if key is not None:
            if key.max_concurrent is not None:
                bounds.append((("key", key.name), key.max_concurrent))
            team = FrontDesk(rt).team(key)
            if team is not None and team.quota.max_concurrent is not None:
                bounds.append((("team", team.name), team.quota.max_concurrent))
        gates = []
        for name, capacity in bounds:
            gate = self._gates.get(name)
            if gate is None:
                gate = self._gates[name] = Gate(capacity)
            gate.capacity = capacity
            gates.append(gate)
        return Gates(tuple(gates))

    async def _mark_submitting(self, batch: StoredBatch, lines: Sequence[Line]) -> None:
        """Lines about to be submitted, marked so in one write. Should the gateway die before
        a line's job ids are stored, the next one finds it ``submitting`` and submits it
        again: the one window (a submission in flight) in which a line may run twice."""
        again = [line.n for line in lines if line.state == "submitting"]
        if again:
            logger.warning(
                "batch %s: %d lines were being submitted when their gateway stopped; they are "
                "submitted again (a first job of theirs may have run too)", batch.id, len(again),
            )  # fmt: skip
        await self.store.submitting(
            batch.id, [line.n for line in lines if line.state != "submitted"]
        )

    # ------------------------------------------------------------------ a line

    async def _line(
        self,
        batch: StoredBatch,
        door: LineDoor,
        key: KeySettings,
        line: Line,
        gate: Gates,
        wave: Wave,
    ) -> None:
        self.metrics.in_flight.inc()
        try:
            await self._answer(batch, door, key, line, wave, gate)
        except asyncio.CancelledError:
            raise
        except Exception:  # the gateway's own fault (its database, say): tried again
            logger.exception("line %d of batch %s failed", line.n, batch.id)
            with contextlib.suppress(Exception):
                line.attempts = max(line.attempts, 1)
                if line.attempts < self.settings.max_attempts:
                    line.attempts += 1
                    await self.store.retry(line)
                else:
                    error = InternalError("The gateway could not run this line.")
                    result = door.refused(line.custom_id, f"{batch.id}-{line.n}", error)
                    await self.store.finish(line, "error", result)
        finally:
            self.metrics.in_flight.dec()
            gate.leave()

    async def _answer(
        self,
        batch: StoredBatch,
        door: LineDoor,
        key: KeySettings,
        line: Line,
        wave: Wave,
        gate: Gates,
    ) -> None:
        rt = self._rt
        assert rt is not None
        front = FrontDesk(rt)
        request_id = f"{batch.id}-{line.n}"
        store = self.store

        followed: list[Sequence[str]] = []

        async def submitted(job_ids: Sequence[str]) -> None:
            followed.append(job_ids)
            try:
                await store.submitted(line, job_ids)
            except Exception:  # answered all the same; only a restart would ask again
                logger.exception("could not store the jobs of line %d of %s", line.n, batch.id)

        call = Call(
            key=key,
            route=door.route,
            request_id=request_id,
            timeout=max(1.0, batch.expires_at - time.time()),
            batch=True,
            on_submitted=submitted,
        )
        try:
            planned = await door.plan(front, key, str(batch.body["endpoint"]), line.request)
        except GatewayError as error:  # refused as the live endpoint would refuse it
            wave.ready()
            await front.refuse(front.exchange(call), error)
            refused = door.refused(line.custom_id, request_id, error)
            await self._keep(store.finish(line, "error", refused))
            self.metrics.count("failed")
            return
        except BaseException:
            wave.ready()
            raise
        await wave.ready_and_wait()  # the wave's lines reach the batcher together
        resume = line.job_ids if line.state == "submitted" else ()
        if not resume:
            line.attempts += 1
        try:
            answer = await front.answer(call, planned.plan, resume)
            await planned.complete(answer)
            body = planned.codec.render(answer)
        except GatewayError as error:
            # Each outcome is stored even if a stop (its grace shorter than a slow disk's writes)
            # cancels the line now: else it stayed ``submitting`` and was sent again.
            if rt.shutting_down or self._stopping:  # cut by the drain, not failed
                if not (followed or resume):  # never submitted: queued again, untried
                    line.attempts -= 1
                    await self._keep(store.retry(line))
                return  # its jobs' ids are stored: followed by the next gateway
            if isinstance(error, RateLimited):  # the key's limits: wait, not a failed try
                gate.pause(_retry_after(error))
                line.attempts -= 0 if resume else 1
                await self._keep(store.retry(line))
                self.metrics.count("retried")
                return
            if retryable(error) and line.attempts < self.settings.max_attempts:
                await self._keep(store.retry(line))
                self.metrics.count("retried")
                return
            refused = door.refused(line.custom_id, request_id, error)
            await self._keep(store.finish(line, "error", refused))
            self.metrics.count("failed")
            return
        tokens = (answer.prompt_tokens, answer.completion_tokens)  # as the body's usage says
        # Answered and charged: the line is stored done even if a stop cancels it now (else the
        # next gateway would follow its jobs again and charge it twice).
        output = door.output(line.custom_id, request_id, body)
        await self._keep(store.finish(line, "output", output, tokens))
        self.metrics.count("done")

    async def _keep(self, work: Awaitable[None]) -> None:
        """Run ``work`` to its end even if the line is cancelled meanwhile; :meth:`aclose`
        waits for it before the stores close."""
        task = asyncio.ensure_future(work)
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)
        await asyncio.shield(task)

    # ------------------------------------------------------------------ the end

    async def finalize(self, batch: StoredBatch, door: LineDoor, status: str) -> None:
        """Write the output and error files, then the batch's final status and counts."""
        now = int(time.time())
        if status == "completed":
            batch.status = "finalizing"
            batch.body.setdefault("finalizing_at", now)
            if not await self.store.save(batch, was=("in_progress", "finalizing")):
                return  # cancelled meanwhile: the next turn ends it so
        output, errors = (
            await write_results(self.store, self.files, batch, door)
            if door.writes_files
            else (None, None)
        )
        counts = await self.store.counts(batch.id)
        batch.body["request_counts"] = {
            "total": counts.total, "completed": counts.done, "failed": counts.failed,
        }  # fmt: skip
        if "usage" in batch.body:  # a batch whose door shows usage (OpenAI's, made with it)
            batch.body["usage"] = counts.usage()
        if output is not None:
            batch.body["output_file_id"] = output
        if errors is not None:
            batch.body["error_file_id"] = errors
        batch.status = status
        batch.body[f"{status}_at"] = int(time.time())
        await self.store.save(batch)
        await self.store.release(batch.id, self.owner)
        logger.info("batch %s %s: %s", batch.id, status, batch.body["request_counts"])


def _retry_after(error: GatewayError) -> float:
    """Seconds the refusal says to wait (``retry-after-ms``, ``retry-after``), else 1."""
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        try:
            return float(error.headers[name]) / scale
        except (KeyError, ValueError):
            continue
    return 1.0


def _drop(tasks: dict[Any, asyncio.Task[None]], name: Any, task: asyncio.Task[None]) -> None:
    if tasks.get(name) is task:
        del tasks[name]


def _ending(batch: StoredBatch, key: KeySettings | None) -> str | None:
    """Why the batch stops starting lines now, if it does."""
    if batch.status == "cancelling":
        return "cancelled"
    if key is None or time.time() >= batch.expires_at:
        return "expired"
    return None
