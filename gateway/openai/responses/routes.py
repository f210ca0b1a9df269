"""The Responses API routes beside ``POST /v1/responses`` (:mod:`.create`).

They read the store; a response is visible only to the key that made it (another key's id is
a 404). Each is one exchange record: metrics, the access log line, OpenAI's error shape.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.config import KeySettings
from gateway.engine.planning import Plan, plan_conversation
from gateway.errors import BadRequest
from gateway.http.exchange import Exchange
from gateway.http.responses import EventStreamResponse, openai_error
from gateway.keys.digests import owner
from gateway.openai.responses.create import ROUTE, door_of, frames, sse_body
from gateway.openai.responses.run import TERMINAL, ResponseRun, replay
from gateway.runtime import Runtime
from gateway.serving.desk import Call, FrontDesk
from gateway.serving.web import bounded, read_json, served

Handler = Callable[[Request, Runtime, KeySettings, Exchange], Awaitable[Response]]


async def _served(request: Request, route: str, handler: Handler) -> Response:
    """The desk's small-route wrapper, in OpenAI's error shape."""

    async def handle(request: Request, desk: FrontDesk, call: Call, ex: Exchange) -> Response:
        return await handler(request, desk.rt, call.key, ex)

    return await served(request, route, handle, openai_error)


async def _body(request: Request, rt: Runtime) -> dict[str, Any]:
    data = await read_json(request, rt.settings.limits)
    if not isinstance(data, dict):
        raise BadRequest("The request body must be a JSON object.")
    return data


# ------------------------------------------------------------------------- stored responses


def _response_id(request: Request) -> str:
    return str(request.path_params["response_id"])


async def _retrieve(request: Request, desk: FrontDesk, call: Call, ex: Exchange) -> Response:
    door = door_of(request)
    record = await door.find(_response_id(request), call.key)
    if request.query_params.get("stream", "false").lower() != "true":
        return JSONResponse(record.body)
    raw = request.query_params.get("starting_after", "-1")
    try:
        after = int(raw)
    except ValueError:
        raise BadRequest("starting_after must be an integer.", param="starting_after") from None
    # A live view is a request of its key like any other: admitted (0 tokens), and holding a
    # place in the key's (and team's) concurrency limits for as long as it is open.
    model = desk.catalog(call.key).resolve(str(record.body.get("model", "")))
    admission = await desk.hold(call, model, ex)
    ex.stream = True

    async def release(status: int, outcome: str) -> None:
        await admission.release(0)

    if record.background:
        keepalive = call.keepalive or desk.rt.settings.limits.keepalive_interval
        tail = sse_body(door.background.tail(record, after, keepalive))
        return EventStreamResponse(tail, admission.headers, release)  # type: ignore[return-value]
    events = [e for e in replay(record.body) if e["sequence_number"] > after]

    async def body() -> AsyncIterator[bytes]:
        yield frames(events)

    return EventStreamResponse(body(), admission.headers, release)  # type: ignore[return-value]


async def _delete(request: Request, rt: Runtime, key: KeySettings, _: Exchange) -> Response:
    door = door_of(request)
    response_id = _response_id(request)
    await door.find(response_id, key)
    await door.background.cancel(response_id)
    await door.store.delete(response_id, owner(key))
    return JSONResponse({"id": response_id, "object": "response", "deleted": True})


async def _cancel(request: Request, rt: Runtime, key: KeySettings, _: Exchange) -> Response:
    door = door_of(request)
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
    await door.store.cancel(record.id, owner(key), body)
    return JSONResponse(body)


async def _input_items(request: Request, rt: Runtime, key: KeySettings, _: Exchange) -> Response:
    door = door_of(request)
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


async def _input_tokens(request: Request, desk: FrontDesk, call: Call, ex: Exchange) -> Response:
    """Admitted like any request: one request of 0 tokens in the key's (and team's) limits,
    holding a concurrency place while it is counted (off the loop); it runs no job."""
    rt = desk.rt
    data = await _body(request, rt)
    await bounded(data, rt.settings.limits)
    catalog = desk.catalog(call.key)  # the key's view: another model is a 404
    if "model" not in data and catalog.models:
        data["model"] = catalog.models[0].name
    model = catalog.resolve(str(data.get("model")))
    admission = await desk.hold(call, model, ex)
    try:
        body = {**data, "stream": False, "background": False}
        prepared = await door_of(request).prepare(body, call.key)
        conversation = prepared.translated.conversation
        plan: Plan = await asyncio.to_thread(
            plan_conversation, conversation, catalog, rt.settings.limits
        )
    finally:
        await admission.release(0)
    return JSONResponse(
        {"object": "response.input_tokens", "input_tokens": plan.prompt_tokens},
        headers=admission.headers,
    )


async def _compact(request: Request, rt: Runtime, key: KeySettings, _: Exchange) -> Response:
    raise BadRequest(
        "Server-side compaction is not available here: compact the conversation on the client "
        "(summarise it with an ordinary /v1/responses request) and send the summary as input.",
        param=None,
        code="unsupported_endpoint",
    )


async def retrieve_response(request: Request) -> Response:
    return await served(request, ROUTE + "/{id}", _retrieve, openai_error)


async def delete_response(request: Request) -> Response:
    return await _served(request, ROUTE + "/{id}", _delete)


async def cancel_response(request: Request) -> Response:
    return await _served(request, ROUTE + "/{id}/cancel", _cancel)


async def list_input_items(request: Request) -> Response:
    return await _served(request, ROUTE + "/{id}/input_items", _input_items)


async def count_input_tokens(request: Request) -> Response:
    return await served(request, ROUTE + "/input_tokens", _input_tokens, openai_error)


async def compact_response(request: Request) -> Response:
    return await _served(request, ROUTE + "/compact", _compact)
