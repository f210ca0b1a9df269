"""``POST /v1/responses``: the Responses door's planner and codec, and background starts.

Every response goes through the front desk (:func:`gateway.serving.web.serve`): the planner
prepares the request (the store's ``previous_response_id`` chain and ``item_reference``
targets), translates it into the engine's conversation and plans it (off the event loop).
A foreground response is answered by the :class:`ResponseCodec` (OpenAI's stream events or
one ``response`` object, stored before the last bytes). A background response branches in
the route (:func:`_deliver`): admitted and submitted the same way, it answers ``queued`` at
once and is followed by :mod:`.background` with no client.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.config import KeySettings
from gateway.engine.answer import Answer
from gateway.engine.events import ChoiceEnd, Event, KeepAlive, TextDelta, ToolCallDelta
from gateway.engine.planning import Plan, plan_conversation
from gateway.engine.tools import ToolCallChunk
from gateway.errors import GatewayError
from gateway.http.exchange import Exchange
from gateway.http.responses import EVENT_STREAM, ErrorRenderer, EventStreamResponse, openai_error
from gateway.openai.codec import KEEPALIVE_COMMENT
from gateway.openai.responses.door import Prepared, ResponsesDoor, new_object
from gateway.openai.responses.render import sse
from gateway.openai.responses.run import ResponseRun, StreamEvent
from gateway.openai.responses.store import StoredResponse, StoreUnavailable
from gateway.serving.answers import Codec
from gateway.serving.desk import Run
from gateway.serving.web import RequestContext, answer, serve

ROUTE = "/v1/responses"


def door_of(request: Request) -> ResponsesDoor:
    """The Responses door's state: built and closed with the app (``app.state.responses``)."""
    door: ResponsesDoor = request.app.state.responses
    return door


def frames(events: list[StreamEvent]) -> bytes:
    return b"".join(sse(e) for e in events)


class ResponseCodec:
    """Engine events -> Responses stream events; the answer -> a ``response`` object."""

    keeps_answer = True  # a stored response needs the whole of it
    media_type = EVENT_STREAM

    def __init__(self, door: ResponsesDoor, prepared: Prepared, plan: Plan, key: KeySettings):
        self.door = door
        self.prepared = prepared
        self.plan = plan
        self.run = ResponseRun(
            new_object(prepared, plan.model.name, "in_progress"),
            prepared.translated.namespaces,
            quiet=not plan.stream,  # answered whole: its events are never sent
        )
        self.key = key
        self._final: list[StreamEvent] = []
        #: Set for a background response: it is started, not answered (see _deliver).
        self.background: BackgroundStart | None = None

    def opening(self) -> bytes:
        return frames(self.run.opening())

    def event(self, event: Event) -> bytes:
        if isinstance(event, KeepAlive):
            return KEEPALIVE_COMMENT
        return frames(self.run.feed(event))

    def failure(self, error: GatewayError) -> bytes:
        failed = self.run.fail(error, self.plan.prompt_tokens, 0)
        self.door.save_later(self._record(), self.prepared)
        return frames(failed)

    def closing(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        return frames(self._final)

    def render(self, answer: Answer) -> dict[str, Any]:
        return self.run.ended or self.run.snapshot()

    async def complete(self, answer: Answer, exchange: Exchange) -> None:
        """The answer is whole: finish the object, store it before the client can ask."""
        if not self.plan.stream:  # the run saw no events: it is built from the answer
            choice = answer.choices[0]
            if choice.text:
                self.run.feed(TextDelta(0, choice.text))
            for i, call in enumerate(choice.tool_calls):
                self.run.feed(
                    ToolCallDelta(0, ToolCallChunk(i, call.id, call.name, call.arguments))
                )
            self.run.feed(ChoiceEnd(0, choice.reason))
        self._final = self.run.finish(answer.prompt_tokens, answer.completion_tokens)
        if self.prepared.request.store:
            await self.door.save(self._record(), self.prepared)

    def _record(self) -> StoredResponse:
        return self.door.record(self.prepared, self.run.ended or self.run.snapshot(), self.key)


class BackgroundStart:
    """A background response once admitted: its row stored before any job is submitted,
    then the run handed to a follower and the client answered ``queued`` at once."""

    def __init__(
        self, door: ResponsesDoor, prepared: Prepared, plan: Plan, key: KeySettings, request_id: str
    ):
        self.door = door
        self.prepared = prepared
        self.run = ResponseRun(
            new_object(prepared, plan.model.name, "queued"), prepared.translated.namespaces
        )
        self.record = door.record(prepared, self.run.snapshot(), key, request_id)

    async def store(self) -> None:
        """Stored as ``submitting`` before the job exists (the client has no 200 yet). A
        gateway that dies before the job ids are stored leaves it so, and resuming never
        submits it again (see ``ResponsesDoor._replan``): its lease outlasts the slowest
        submission."""
        background = self.door.background
        self.record.owner = background.owner
        self.record.status = "submitting"
        self.record.lease_until = time.time() + background.lease + background.submit_seconds
        store = await self.door.ready_store()
        prepared = self.prepared
        await store.put(self.record, prepared.inputs, chain=prepared.chain, dumped=prepared.dumped)

    async def start(self, run: Run, keepalive: float) -> Response:
        self.record.job_ids = list(run.exchange.job_ids)
        run.exchange.stream = self.prepared.request.stream  # followed as a stream either way
        # Accepted only once its job ids are durable: a crash after the 200 resumes the jobs.
        self.record.status = self.run.status
        self.record.lease_until = time.time() + self.door.background.lease
        try:
            stored = await self.door.store.submitted(self.record)
        except GatewayError:
            stored = False
        if not stored:  # the job runs on, unrecorded: the client is told the store is away
            error = StoreUnavailable()
            run.end(error)
            await run.finish()
            return openai_error(error, run.headers)
        follower = self.door.background.follow(self.record, self.run, run)  # it finishes run
        follower.publish(self.run.opening())
        if self.prepared.request.stream:
            tail = self.door.background.tail(self.record, -1, keepalive)
            return EventStreamResponse(sse_body(tail), run.headers)  # type: ignore[return-value]
        return JSONResponse(self.run.snapshot(), headers=run.headers)


async def _plan(ctx: RequestContext) -> tuple[Plan, Codec]:
    door = door_of(ctx.request)
    prepared = await door.prepare(ctx.data, ctx.key)
    conversation = prepared.translated.conversation
    catalog, limits = ctx.catalog, ctx.limits  # the key's view: another model is a 404
    if not prepared.request.background:
        plan = await ctx.offload(
            plan_conversation, conversation, catalog, limits, ctx.client_timeout
        )
        return plan, ResponseCodec(door, prepared, plan, ctx.key)
    conversation.stream = True  # followed piece by piece, stored as it grows
    plan = await ctx.offload(plan_conversation, conversation, catalog, limits)
    codec = ResponseCodec(door, prepared, plan, ctx.key)
    request_id = ctx.exchange.request_id
    codec.background = start = BackgroundStart(door, prepared, plan, ctx.key, request_id)
    call = door.background.call(ctx.desk, ctx.key, request_id)
    ctx.options.update(timeout=call.timeout, keepalive=call.keepalive, on_admitted=start.store)
    return plan, codec


async def _deliver(run: Run, codec: Codec, errors: ErrorRenderer) -> Response:
    """A background response is followed without its client; any other is answered."""
    start = getattr(codec, "background", None)
    if isinstance(start, BackgroundStart):
        limits = run.desk.rt.settings.limits
        return await start.start(run, limits.keepalive_interval)
    return await answer(run, codec, errors)


async def create_response(request: Request) -> Response:
    return await serve(request, ROUTE, _plan, openai_error, _deliver)


async def sse_body(events: AsyncIterator[StreamEvent | None]) -> AsyncIterator[bytes]:
    yield b""  # the 200 goes out at once: the run is already stored
    async for event in events:
        yield KEEPALIVE_COMMENT if event is None else sse(event)
