"""The Responses API routes beside ``POST /v1/responses`` (:mod:`.create`).

They read the store; a response is visible only to the key that made it (another key's id is
a 404). Each is one exchange record: metrics, the access log line, OpenAI's error shape.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.config import KeySettings
from gateway.engine.planning import plan_conversation
from gateway.errors import BadRequest, GatewayError
from gateway.http.bodies import parse_json, read_body
from gateway.http.common import error_response, request_id
from gateway.http.exchange import Exchange
from gateway.http.responses import EventStreamResponse
from gateway.keys.digests import owner
from gateway.openai.responses.create import ROUTE, door_of, frames, sse_body
from gateway.openai.responses.run import TERMINAL, ResponseRun, replay
from gateway.runtime import Runtime
from gateway.state import runtime

Handler = Callable[[Request, Runtime, KeySettings, Exchange], Awaitable[Response]]


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


# ------------------------------------------------------------------------- stored responses


def _response_id(request: Request) -> str:
    return str(request.path_params["response_id"])


async def _retrieve(request: Request, rt: Runtime, key: KeySettings, _: Exchange) -> Response:
    door = door_of(request)
    record = await door.find(_response_id(request), key)
    if request.query_params.get("stream", "false").lower() != "true":
        return JSONResponse(record.body)
    raw = request.query_params.get("starting_after", "-1")
    try:
        after = int(raw)
    except ValueError:
        raise BadRequest("starting_after must be an integer.", param="starting_after") from None
    if record.background:
        return EventStreamResponse(sse_body(door.background.tail(record, after)), {})  # type: ignore[return-value]
    events = [e for e in replay(record.body) if e["sequence_number"] > after]

    async def body() -> AsyncIterator[bytes]:
        yield frames(events)

    return EventStreamResponse(body(), {})  # type: ignore[return-value]


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


async def _input_tokens(request: Request, rt: Runtime, key: KeySettings, ex: Exchange) -> Response:
    data = await _body(request, rt)
    if "model" not in data and rt.catalog.models:
        data["model"] = rt.catalog.models[0].name
    prepared = await door_of(request).prepare({**data, "stream": False, "background": False}, key)
    plan = plan_conversation(prepared.translated.conversation, rt.catalog, rt.settings.limits)
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
