"""``POST /v1/responses``: the Responses door's planner and codec, and background starts.

A foreground response goes through the lifecycle every door shares
(:func:`gateway.http.serving.serve`): the planner prepares the request (the store's
``previous_response_id`` chain and ``item_reference`` targets), translates it into the
engine's conversation and plans it; the :class:`ResponseCodec` renders the run's events with a
:class:`ResponseRun`, as OpenAI's stream events or one ``response`` object, and stores it
before the last bytes. A background response is admitted and submitted the same way, answers
``queued`` at once, and is followed by :mod:`.background` with no client.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from gateway.http.responses import EVENT_STREAM, EventStreamResponse, openai_error
from gateway.http.serving import Codec, RequestContext, estimate, serve
from gateway.openai.codec import KEEPALIVE_COMMENT
from gateway.openai.responses.door import Prepared, ResponsesDoor, new_object
from gateway.openai.responses.render import sse
from gateway.openai.responses.run import ResponseRun, StreamEvent
from gateway.openai.responses.store import StoredResponse, StoreUnavailable

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
            new_object(prepared, plan.model.name, "in_progress"), prepared.translated.namespaces
        )
        self.key = key
        self._final: list[StreamEvent] = []

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
        return self.run.snapshot()

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
        return self.door.record(self.prepared, self.run.snapshot(), self.key)


class Handover(GatewayError):
    """Not an error: a background response was started and answered; ``serve`` stops there.

    The POST's own record then logs the hand-over (no tokens, no ledger row); the run's
    record, finished when it ends, carries the usage.
    """

    status_code = 200
    default_code = "background"

    def __init__(self, response: Response) -> None:
        super().__init__("handed over to a background run")
        self.response = response


def _errors(error: GatewayError, headers: dict[str, str]) -> Response:
    if isinstance(error, Handover):
        return error.response
    return openai_error(error, headers)


async def _plan(ctx: RequestContext) -> tuple[Plan, Codec]:
    door = door_of(ctx.request)
    if isinstance(ctx.data, dict) and ctx.data.get("background") is True:
        raise Handover(await _background(ctx))
    prepared = await door.prepare(ctx.data, ctx.key)
    plan = plan_conversation(
        prepared.translated.conversation, ctx.runtime.catalog, ctx.limits, ctx.client_timeout
    )
    return plan, ResponseCodec(door, prepared, plan, ctx.key)


async def create_response(request: Request) -> Response:
    return await serve(request, ROUTE, _plan, _errors)


async def _background(ctx: RequestContext) -> Response:
    """Admitted and submitted like any request; followed without the client."""
    rt, key, data = ctx.runtime, ctx.key, ctx.data
    settings = rt.settings
    door = door_of(ctx.request)
    exchange = Exchange(ctx.exchange.request_id, ROUTE)
    exchange.key_name = key.name
    headers: dict[str, str] = {}
    try:
        prepared = await door.prepare(data, key)
        conversation = prepared.translated.conversation
        conversation.stream = True  # followed piece by piece, stored as it grows
        plan = plan_conversation(conversation, rt.catalog, settings.limits)
        exchange.model, exchange.stream = plan.model.name, prepared.request.stream
        exchange.prompt_tokens, exchange.ignored = plan.prompt_tokens, plan.ignored
        if settings.logging.log_prompts or settings.ledger.log_prompts:
            exchange.prompt_text = plan.prompts[0]
        charged = estimate(plan, settings.limits)
        admission = await rt.limiter.admit(
            key, plan.model.name, charged, aliases=plan.model.aliases
        )
        headers.update(admission.headers)

        async def release_admission(done: Exchange) -> None:
            await admission.release(done.prompt_tokens + done.completion_tokens)

        exchange.cleanups.append(release_admission)
        run = ResponseRun(
            new_object(prepared, plan.model.name, "queued"), prepared.translated.namespaces
        )
        record = door.record(prepared, run.snapshot(), key)
        record.owner = door.background.owner
        # Stored first as "submitting" (the client has no 200 yet). A gateway that dies before
        # the job ids below are stored leaves it so; resuming never submits it again (see
        # ResponsesDoor._replan). Its lease outlasts the slowest submission.
        record.status = "submitting"
        record.lease_until = time.time() + door.background.lease + settings.limits.max_deadline
        store = await door.ready_store()
        await store.put(record, prepared.inputs, chain=prepared.chain)
        deadline = asyncio.get_running_loop().time() + settings.limits.max_deadline
        try:
            jobs = await rt.completions.submit(key, rt.account(key), plan, deadline)
        except GatewayError as error:
            run.fail(error, 0, 0)
            record.body, record.status = run.snapshot(), run.status
            with contextlib.suppress(GatewayError):
                await store.update(record, final=True)
            raise
        # Accepted only once its job ids are durable: a crash after the 200 resumes the jobs.
        record.job_ids = list(jobs.ids)
        record.status = run.status
        record.lease_until = time.time() + door.background.lease
        try:
            if not await store.submitted(record):
                raise StoreUnavailable()
        except GatewayError:
            jobs.release()
            raise
    except GatewayError:
        await exchange.release()
        raise
    exchange.job_ids = list(jobs.ids)
    exchange.submitted_at = time.perf_counter()
    rt.begin_usage(exchange, charged)  # ledger: the in-flight row (issue 23; finish ends it)
    headers["x-job-id"] = ",".join(jobs.ids)
    opening = run.opening()
    follower = door.background.follow(rt, record, run, plan, jobs, exchange)  # finishes it
    follower.publish(opening)
    if prepared.request.stream:
        tail = door.background.tail(record, -1)
        return EventStreamResponse(sse_body(tail), headers)  # type: ignore[return-value]
    return JSONResponse(run.snapshot(), headers=headers)


async def sse_body(events: AsyncIterator[StreamEvent]) -> AsyncIterator[bytes]:
    yield b""  # the 200 goes out at once: the run is already stored
    async for event in events:
        yield sse(event)
