"""Batched submissions: requests for one account and model within a short window share a POST.

The jobs API takes a list of inputs and answers one id per input, in order. Each submission
costs the service (and the gateway) a request, so submissions for the same upstream token and
tag that arrive within ``upstream.submit_batch_window`` milliseconds are gathered into one
``POST /jobs``; each member gets its own ids back, sliced in order.

The retry rules stay the client's (:meth:`JobsClient.submit`): a batch is resent only when it
certainly never arrived. A batch the service *refused* (``success: false``, or a 4xx that says
the body was read and rejected) created no job, so its members are sent again one by one, once:
one bad input then fails only its own request. Any other failure fails every member, since
some jobs may exist.

A member that leaves (client gone, deadline) before its batch is sent is taken out of it; one
that leaves while the batch is in flight may leave a job behind, as a single submission could.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gateway.upstream.client import JobsClient
from gateway.upstream.errors import UpstreamFailure

#: A batch is sent at once when its prompts reach this many characters: the service's limit on
#: a body is unknown, and one very large body would hold every member back if it were refused.
MAX_BATCH_CHARS = 1_000_000
#: Statuses of an answer that refused the whole submission after reading it (no job made).
REFUSED_STATUSES = frozenset({400, 413, 422})

#: Called once per POST /jobs that got ids: the number of inputs it carried.
SubmissionHook = Callable[[int], None]


def refused_whole(failure: UpstreamFailure) -> bool:
    """True when the service read the submission and turned it down: no job was created."""
    if failure.kind == "rejected":
        return True
    return failure.kind == "http_error" and failure.status_code in REFUSED_STATUSES


@dataclass(slots=True)
class _Member:
    inputs: Sequence[str]
    deadline: float | None
    future: asyncio.Future[list[str]]


@dataclass(slots=True)
class _Batch:
    token: str
    tag: str
    account: str
    members: list[_Member] = field(default_factory=list)
    inputs: int = 0
    chars: int = 0
    timer: asyncio.TimerHandle | None = None


class SubmitBatcher:
    """Gathers submissions per (token, tag) for ``window`` seconds, at most ``max_inputs`` each.

    With ``window`` 0 every submission goes out on its own, as before batching existed.
    """

    def __init__(
        self,
        client: JobsClient,
        window: float,
        max_inputs: int,
        *,
        on_submission: SubmissionHook | None = None,
    ) -> None:
        self._client = client
        self.window = window
        self.max_inputs = max_inputs
        self._on_submission = on_submission
        self._open: dict[tuple[str, str], _Batch] = {}
        self._sending: set[asyncio.Task[None]] = set()

    async def submit(
        self,
        token: str,
        tag: str,
        inputs: Sequence[str],
        *,
        account: str = "",
        deadline: float | None = None,
    ) -> list[str]:
        """The job ids of ``inputs``, in order; raises :class:`UpstreamFailure` like the client."""
        if self.window <= 0 or len(inputs) >= self.max_inputs:
            return await self._send_alone(token, tag, inputs, account, deadline)
        loop = asyncio.get_running_loop()
        size = sum(len(text) for text in inputs)
        batch = self._open.get((token, tag))
        if batch is not None and (
            batch.inputs + len(inputs) > self.max_inputs or batch.chars + size > MAX_BATCH_CHARS
        ):
            self._flush(batch)  # no room: the open batch goes now, this one starts the next
            batch = None
        if batch is None:
            batch = _Batch(token, tag, account)
            self._open[(token, tag)] = batch
            batch.timer = loop.call_later(self.window, self._flush, batch)
        member = _Member(inputs, deadline, loop.create_future())
        batch.members.append(member)
        batch.inputs += len(inputs)
        batch.chars += size
        if batch.inputs >= self.max_inputs or batch.chars >= MAX_BATCH_CHARS:
            self._flush(batch)
        # Leaving (cancellation) cancels only this member's future: the batch goes on.
        return await member.future

    def _flush(self, batch: _Batch) -> None:
        """Close ``batch`` to newcomers and send it in a task of its own."""
        if self._open.get((batch.token, batch.tag)) is batch:
            del self._open[(batch.token, batch.tag)]
        if batch.timer is not None:
            batch.timer.cancel()
            batch.timer = None
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: _Batch) -> None:
        members = [m for m in batch.members if not m.future.done()]
        if not members:
            return
        inputs = [text for m in members for text in m.inputs]
        deadlines = [m.deadline for m in members if m.deadline is not None]
        try:
            ids = await self._client.submit(
                batch.token,
                batch.tag,
                inputs,
                account=batch.account,
                deadline=min(deadlines) if len(deadlines) == len(members) else None,
            )
        except UpstreamFailure as failure:
            if len(members) > 1 and refused_whole(failure):
                await asyncio.gather(*(self._retry_alone(batch, m) for m in members))
            else:
                for member in members:
                    _fail(member, failure)
            return
        except BaseException as exc:  # cancelled at shutdown, or a bug: nobody may hang
            for member in members:
                _fail(member, UpstreamFailure("connect_error", f"submission abandoned ({exc!r})"))
            raise
        self._count(len(inputs))
        at = 0
        for member in members:
            own = ids[at : at + len(member.inputs)]
            at += len(member.inputs)
            if not member.future.done():
                member.future.set_result(own)

    async def _retry_alone(self, batch: _Batch, member: _Member) -> None:
        if member.future.done():
            return
        try:
            ids = await self._client.submit(
                batch.token,
                batch.tag,
                member.inputs,
                account=batch.account,
                deadline=member.deadline,
            )
        except UpstreamFailure as failure:
            _fail(member, failure)
            return
        self._count(len(member.inputs))
        if not member.future.done():
            member.future.set_result(ids)

    async def _send_alone(
        self,
        token: str,
        tag: str,
        inputs: Sequence[str],
        account: str,
        deadline: float | None,
    ) -> list[str]:
        ids = await self._client.submit(token, tag, inputs, account=account, deadline=deadline)
        self._count(len(inputs))
        return ids

    def _count(self, inputs: int) -> None:
        if self._on_submission is not None:
            self._on_submission(inputs)

    async def aclose(self) -> None:
        """Send what is still gathered and wait for the submissions under way."""
        for batch in list(self._open.values()):
            self._flush(batch)
        for task in list(self._sending):
            with contextlib.suppress(BaseException):
                await task


def _fail(member: _Member, failure: UpstreamFailure) -> None:
    if not member.future.done():
        member.future.set_exception(failure)
