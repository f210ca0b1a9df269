"""The Responses API routes: ``/v1/responses`` and what hangs off it.

``POST /v1/responses`` follows the chat route's lifecycle (auth -> body -> plan -> admission ->
submission -> events) and renders the events with a :class:`ResponseRun`: as OpenAI's stream
events, as one ``response`` object, or (``background: true``) into the store while no client
waits. The other routes read the store; a response is visible only to the key that made it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.bodies import parse_json, read_body
from gateway.choices import ChoiceState, Event, KeepAlive
from gateway.config import KeySettings
from gateway.errors import BadRequest, GatewayError, InternalError, RateLimited
from gateway.exchange import Exchange
from gateway.openai.responses import contract
from gateway.openai.responses.door import ResponsesDoor, new_object
from gateway.openai.responses.render import sse
from gateway.openai.responses.run import TERMINAL, ResponseRun, StreamEvent, replay
from gateway.planning import Plan
from gateway.responses import DeferredJSONResponse, EventStreamResponse
from gateway.routes.common import client_timeout, deadline_cap, error_response, request_id, runtime
from gateway.runtime import Runtime
from gateway.streaming import KEEPALIVE_COMMENT, settle

ROUTE = "/v1/responses"
Handler = Callable[[Request, Runtime, KeySettings, Exchange], Awaitable[Response]]


def _door(rt: Runtime) -> ResponsesDoor:
    door = rt.responses
    assert door is not None
    return door


def _keepalive(request: Request, rt: Runtime) -> float:
    interval = rt.settings.limits.keepalive_interval
    timeout = client_timeout(request)
    if timeout is None or timeout <= 0:
        return interval
    return max(0.5, min(interval, timeout / 2))


async def _served(request: Request, route: str, handler: Handler) -> Response:
    """Auth, the exchange record (metrics, access log), errors in OpenAI's shape."""
    rt = runtime(request)
    exchange = Exchange(request_id(request), route)
    try:
        key = rt.keys.authenticate(request.headers)
        exchange.key_name = key.name
        response = await handler(request, rt, key, exchange)
    except GatewayError as error:
        exchange.status, exchange.outcome = error.status_code, error.code or "error"
        await rt.finish(exchange)
        return error_response(error)
    exchange.status = getattr(response, "status_code", 200)
    await rt.finish(exchange)
    return response


async def _body(request: Request, rt: Runtime) -> dict[str, Any]:
    limits = rt.settings.limits
    data = parse_json(await read_body(request, limits.max_body_bytes), limits.max_json_depth)
    if not isinstance(data, dict):
        raise BadRequest("The request body must be a JSON object.")
    return data


# ------------------------------------------------------------------------- POST /v1/responses


async def create_response(request: Request) -> Response:
    rt = runtime(request)
    settings = rt.settings
    door = _door(rt)
    exchange = Exchange(request_id(request), ROUTE)
    headers: dict[str, str] = {}
    try:
        key = rt.keys.authenticate(request.headers)
        exchange.key_name = key.name
        data = await _body(request, rt)
        prepared = await door.prepare(data, key)
        background = prepared.request.background
        conversation = prepared.translated.conversation
        if background:
            conversation.stream = True  # followed piece by piece, stored as it grows
        cap = None if background else deadline_cap(request, data)
        plan = contract.plan(conversation, rt.catalog, settings.limits, cap)
        exchange.model, exchange.stream = plan.model.name, prepared.request.stream
        exchange.prompt_tokens, exchange.ignored = plan.prompt_tokens, plan.ignored
        if settings.logging.log_prompts or settings.ledger.log_prompts:
            exchange.prompt_text = plan.prompts[0]
        estimate = plan.prompt_tokens + (plan.max_tokens or settings.limits.completion_estimate)
        admission = await rt.limiter.admit(
            key, plan.model.name, estimate, aliases=plan.model.aliases
        )
        headers.update(admission.headers)

        async def release_admission(done: Exchange) -> None:
            await admission.release(done.prompt_tokens + done.completion_tokens)

        exchange.cleanups.append(release_admission)
        status = "queued" if background else "in_progress"
        run = ResponseRun(
            new_object(prepared, plan.model.name, status), prepared.translated.namespaces
        )
        record = door.record(prepared, run.snapshot(), key)
        if background:  # stored before the job exists: a lost row would be a lost answer
            record.owner = door.background.owner
            record.lease_until = time.time() + door.background.lease
            await (await door.ready_store()).put(record, prepared.inputs)
        loop = asyncio.get_running_loop()
        limit = settings.limits.max_deadline if background else plan.timeout
        deadline = loop.time() + limit
        try:
            jobs = await rt.completions.submit(key, rt.account(key), plan, deadline)
        except GatewayError as error:
            if background:
                run.fail(error, 0, 0)
                record.body, record.status = run.snapshot(), run.status
                await door.store.update(record, final=True)
            raise
    except GatewayError as error:
        if isinstance(error, RateLimited) and exchange.key_name:
            rt.metrics.count_rate_limited(exchange.key_name, error.code or "rate_limited")
        exchange.status, exchange.outcome = error.status_code, error.code or "error"
        exchange.prompt_tokens = 0
        await rt.finish(exchange)
        return error_response(error, headers)

    exchange.job_ids = list(jobs.ids)
    exchange.submitted_at = time.perf_counter()
    headers["x-job-id"] = ",".join(jobs.ids)
    if background:
        record.job_ids = list(jobs.ids)
        follower = door.background.follow(rt, record, run, plan, jobs, exchange)
        follower.publish(run.opening())
        if prepared.request.stream:
            tail = door.background.tail(record, -1)
            return EventStreamResponse(_sse(tail), headers)  # type: ignore[return-value]
        return JSONResponse(run.snapshot(), headers=headers)

    async def release_jobs(_: Exchange) -> None:
        jobs.release()

    exchange.cleanups.append(release_jobs)
    choices = [
        ChoiceState(i, job_id, plan, settings.upstream.strip_ansi)
        for i, job_id in enumerate(jobs.ids)
    ]
    events = rt.completions.events(plan, jobs, deadline, choices, keepalive=_keepalive(request, rt))

    async def finalize() -> None:
        if prepared.request.store:
            record.body, record.status = run.snapshot(), run.status
            await door.save(record, prepared)

    async def on_close(status: int, outcome: str) -> None:
        if exchange.outcome == "ok":
            exchange.status, exchange.outcome = status, outcome
        await rt.finish(exchange)

    if plan.stream:
        body = _stream(run, plan, choices, events, exchange, finalize)
        return EventStreamResponse(body, headers, on_close)  # type: ignore[return-value]

    async def produce() -> dict[str, Any]:
        try:
            async for event in events:
                if not isinstance(event, KeepAlive):
                    exchange.mark_text()
                    run.feed(event)
        except GatewayError:
            settle(exchange, choices)
            raise
        finally:
            await events.aclose()  # type: ignore[attr-defined]
        settle(exchange, choices)
        run.finish(plan.prompt_tokens, exchange.completion_tokens)
        await finalize()
        await exchange.release()  # before the answer is written (see Exchange.release)
        return run.snapshot()

    return DeferredJSONResponse(produce, headers, on_close)  # type: ignore[return-value]


def _frames(events: Sequence[StreamEvent]) -> bytes:
    return b"".join(sse(e) for e in events)


async def _stream(
    run: ResponseRun,
    plan: Plan,
    choices: Sequence[ChoiceState],
    events: AsyncIterator[Event],
    exchange: Exchange,
    finalize: Callable[[], Awaitable[None]],
) -> AsyncIterator[bytes]:
    """The SSE body; its first item waits for the first event, so an early failure still
    gets a real status code (as on chat)."""
    try:
        first: Event | None = await anext(events)
    except StopAsyncIteration:
        first = None
    except GatewayError:
        await exchange.release()
        raise
    yield _frames(run.opening())
    try:
        if first is not None:
            yield _encode(run, first, exchange)
            async for event in events:
                yield _encode(run, event, exchange)
    except (GeneratorExit, asyncio.CancelledError):
        settle(exchange, choices)
        raise
    except Exception as exc:
        error = (
            exc
            if isinstance(exc, GatewayError)
            else InternalError("The gateway failed while streaming; it has been logged.")
        )
        exchange.status, exchange.outcome = error.status_code, error.code or "error"
        settle(exchange, choices)
        failed = run.fail(error, plan.prompt_tokens, exchange.completion_tokens)
        await finalize()
        await exchange.release()
        yield _frames(failed)
        return
    settle(exchange, choices)
    final = run.finish(plan.prompt_tokens, exchange.completion_tokens)
    await finalize()  # stored before the last bytes: the client may retrieve it at once
    await exchange.release()
    yield _frames(final)


def _encode(run: ResponseRun, event: Event, exchange: Exchange) -> bytes:
    if isinstance(event, KeepAlive):
        return KEEPALIVE_COMMENT
    exchange.mark_text()
    return _frames(run.feed(event))


async def _sse(events: AsyncIterator[StreamEvent]) -> AsyncIterator[bytes]:
    yield b""  # the 200 goes out at once: the run is already stored
    async for event in events:
        yield sse(event)


# ------------------------------------------------------------------------- stored responses


def _response_id(request: Request) -> str:
    return str(request.path_params["response_id"])


async def _retrieve(request: Request, rt: Runtime, key: KeySettings, _: Exchange) -> Response:
    door = _door(rt)
    record = await door.find(_response_id(request), key)
    if request.query_params.get("stream", "false").lower() != "true":
        return JSONResponse(record.body)
    raw = request.query_params.get("starting_after", "-1")
    try:
        after = int(raw)
    except ValueError:
        raise BadRequest("starting_after must be an integer.", param="starting_after") from None
    if record.background:
        return EventStreamResponse(_sse(door.background.tail(record, after)), {})  # type: ignore[return-value]
    events = [e for e in replay(record.body) if e["sequence_number"] > after]

    async def body() -> AsyncIterator[bytes]:
        yield _frames(events)

    return EventStreamResponse(body(), {})  # type: ignore[return-value]


async def _delete(request: Request, rt: Runtime, key: KeySettings, _: Exchange) -> Response:
    door = _door(rt)
    response_id = _response_id(request)
    await door.find(response_id, key)
    await door.background.cancel(response_id)
    await door.store.delete(response_id, key.name)
    return JSONResponse({"id": response_id, "object": "response", "deleted": True})


async def _cancel(request: Request, rt: Runtime, key: KeySettings, _: Exchange) -> Response:
    door = _door(rt)
    record = await door.find(_response_id(request), key)
    if not record.background:
        raise BadRequest("Only background responses can be cancelled.", param="response_id")
    if record.status in TERMINAL:
        return JSONResponse(record.body)
    follower = await door.background.cancel(record.id)
    if follower is not None:
        body = follower.run.snapshot()
    else:
        run = ResponseRun(record.body)
        run.cancel()
        body = run.snapshot()
    await door.store.cancel(record.id, key.name, body)
    return JSONResponse(body)


async def _input_items(request: Request, rt: Runtime, key: KeySettings, _: Exchange) -> Response:
    door = _door(rt)
    record = await door.find(_response_id(request), key)
    query = request.query_params
    try:
        limit = int(query.get("limit", "20"))
    except ValueError:
        raise BadRequest("limit must be an integer.", param="limit") from None
    if not 1 <= limit <= 100:
        raise BadRequest("limit must be between 1 and 100.", param="limit")
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise BadRequest("order must be asc or desc.", param="order")
    items = await door.store.items(record.id, role="input")
    if order == "desc":
        items.reverse()
    after = query.get("after")
    if after:
        ids = [str(i.get("id")) for i in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    page = items[:limit]
    return JSONResponse(
        {
            "object": "list",
            "data": page,
            "first_id": str(page[0]["id"]) if page else "",
            "last_id": str(page[-1]["id"]) if page else "",
            "has_more": len(items) > limit,
        }
    )


async def _input_tokens(request: Request, rt: Runtime, key: KeySettings, ex: Exchange) -> Response:
    data = await _body(request, rt)
    if "model" not in data and rt.catalog.models:
        data["model"] = rt.catalog.models[0].name
    prepared = await _door(rt).prepare({**data, "stream": False, "background": False}, key)
    plan = contract.plan(prepared.translated.conversation, rt.catalog, rt.settings.limits)
    ex.model = plan.model.name
    return JSONResponse({"object": "response.input_tokens", "input_tokens": plan.prompt_tokens})


async def _compact(request: Request, rt: Runtime, key: KeySettings, _: Exchange) -> Response:
    raise BadRequest(
        "Server-side compaction is not available here: compact the conversation on the client "
        "(summarise it with an ordinary /v1/responses request) and send the summary as input.",
        param=None,
        code="unsupported_endpoint",
    )


async def retrieve_response(request: Request) -> Response:
    return await _served(request, ROUTE + "/{id}", _retrieve)


async def delete_response(request: Request) -> Response:
    return await _served(request, ROUTE + "/{id}", _delete)


async def cancel_response(request: Request) -> Response:
    return await _served(request, ROUTE + "/{id}/cancel", _cancel)


async def list_input_items(request: Request) -> Response:
    return await _served(request, ROUTE + "/{id}/input_items", _input_items)


async def count_input_tokens(request: Request) -> Response:
    return await _served(request, ROUTE + "/input_tokens", _input_tokens)


async def compact_response(request: Request) -> Response:
    return await _served(request, ROUTE + "/compact", _compact)
