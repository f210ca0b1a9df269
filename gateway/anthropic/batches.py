"""``/v1/messages/batches``: Anthropic's Message Batches over the gateway's batch runner.

The requests are stored as lines of a batch (door ``anthropic``) and answered like OpenAI
batch lines (:mod:`gateway.batches.runner`), each through the front desk as a
``POST /v1/messages`` would be; the results are read from the lines, in Anthropic's shapes.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gateway.anthropic.batch_lines import AnthropicLines
from gateway.anthropic.errors import error_response
from gateway.batches.service import BatchService
from gateway.batches.store import ACTIVE, Line, StoredBatch
from gateway.errors import BadRequest, GatewayError, NotFound
from gateway.http.common import request_id
from gateway.http.exchange import Exchange
from gateway.keys.digests import owner
from gateway.serving.desk import Call, FrontDesk
from gateway.serving.web import read_json, served

DOOR = "anthropic"
ROUTE = "/v1/messages/batches"
WINDOW = 24 * 3600
CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def _errors(request: Request) -> Callable[[GatewayError, dict[str, str]], Response]:
    rid = request_id(request)
    return lambda error, headers: error_response(error, headers, rid)


async def _service(request: Request) -> BatchService:
    """The open batch store (``app.state.batches``, built and closed with the app)."""
    batches: BatchService = request.app.state.batches
    return await batches.ready()


def _time(ts: float | int | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


async def batch_object(request: Request, batch: StoredBatch, base: str) -> dict[str, Any]:
    """Anthropic's ``message_batch`` object."""
    counts = await (await _service(request)).batches.counts(batch.id)
    ended = batch.status not in ACTIVE
    body = batch.body
    ended_at = next(
        (body[f"{s}_at"] for s in ("completed", "cancelled", "expired") if f"{s}_at" in body),
        None,
    )
    return {
        "id": batch.id,
        "type": "message_batch",
        "processing_status": (
            "ended" if ended else "canceling" if batch.status == "cancelling" else "in_progress"
        ),
        "request_counts": {
            "processing": counts.pending,
            "succeeded": counts.done,
            "errored": counts.failed,
            "canceled": counts.cancelled,
            "expired": counts.expired,
        },
        "ended_at": _time(ended_at),
        "created_at": _time(batch.created_at),
        "expires_at": _time(batch.expires_at),
        "archived_at": None,
        "cancel_initiated_at": _time(body.get("cancelling_at")),
        "results_url": f"{base}{ROUTE}/{batch.id}/results" if ended else None,
    }


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


# ---------------------------------------------------------------------- create


def _lines(data: Any, batch_id: str, most: int) -> list[Line]:
    if not isinstance(data, dict) or not isinstance(data.get("requests"), list):
        raise BadRequest("requests: Field required (a list of {custom_id, params}).")
    requests = data["requests"]
    if not requests:
        raise BadRequest("requests: at least one request is required.")
    if len(requests) > most:
        raise BadRequest(f"requests: at most {most} requests are allowed (files.max_lines).")
    seen: set[str] = set()
    lines = []
    for n, item in enumerate(requests):
        custom_id = item.get("custom_id") if isinstance(item, dict) else None
        if not isinstance(custom_id, str) or not CUSTOM_ID.match(custom_id):
            raise BadRequest(
                f"requests.{n}.custom_id: 1 to 64 letters, digits, '-' or '_' are required."
            )
        if custom_id in seen:
            raise BadRequest(f"requests.{n}.custom_id: '{custom_id}' is used twice.")
        params = item.get("params")
        if not isinstance(params, dict):
            raise BadRequest(f"requests.{n}.params: an object is required.")
        seen.add(custom_id)
        lines.append(Line(batch_id, n, custom_id, params))
    return lines


async def _create(request: Request, front: FrontDesk, call: Call, ex: Exchange) -> Response:
    settings = front.rt.settings
    data = await read_json(request, settings.limits)
    now = time.time()
    batch = StoredBatch(
        "msgbatch_" + secrets.token_hex(12), call.key.name, DOOR, "validating", now,
        now + WINDOW, {"created_at": int(now), "endpoint": "/v1/messages"},
        key_id=owner(call.key),
    )  # fmt: skip
    lines = _lines(data, batch.id, settings.files.max_lines)
    svc = await _service(request)
    for start in range(0, len(lines), 500):
        await svc.batches.add_lines(lines[start : start + 500])
    await svc.batches.put(batch)
    svc.runner.wake()
    return JSONResponse(await batch_object(request, batch, _base(request)))


async def create_batch(request: Request) -> Response:
    return await served(request, ROUTE, _create, _errors(request))


# ---------------------------------------------------------------------- reading


async def _owned(request: Request, key_id: str) -> StoredBatch:
    """The batch if the key identity ``key_id`` owns it, else the 404 of a missing one."""
    batch_id = request.path_params["batch_id"]
    found = await (await _service(request)).batches.get(batch_id, key_id, DOOR)
    if found is None:
        raise NotFound(f"No message batch with id '{batch_id}'.")
    return found


async def _retrieve(request: Request, front: FrontDesk, call: Call, ex: Exchange) -> Response:
    batch = await _owned(request, owner(call.key))
    return JSONResponse(await batch_object(request, batch, _base(request)))


async def retrieve_batch(request: Request) -> Response:
    return await served(request, ROUTE + "/{batch_id}", _retrieve, _errors(request))


async def _list(request: Request, front: FrontDesk, call: Call, ex: Exchange) -> Response:
    raw = request.query_params.get("limit", "20")
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise BadRequest("limit: an integer between 1 and 1000 is required.")
    limit = int(raw)
    store = (await _service(request)).batches
    after = request.query_params.get("after_id")
    found = await store.page(owner(call.key), DOOR, after=after, limit=limit + 1)
    data = [await batch_object(request, b, _base(request)) for b in found[:limit]]
    return JSONResponse(
        {
            "data": data,
            "has_more": len(found) > limit,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
    )


async def list_batches(request: Request) -> Response:
    return await served(request, ROUTE, _list, _errors(request))


async def _cancel(request: Request, front: FrontDesk, call: Call, ex: Exchange) -> Response:
    svc = await _service(request)
    batch = await svc.cancel(await _owned(request, owner(call.key)))
    return JSONResponse(await batch_object(request, batch, _base(request)))


async def cancel_batch(request: Request) -> Response:
    return await served(request, ROUTE + "/{batch_id}/cancel", _cancel, _errors(request))


async def _results(request: Request, front: FrontDesk, call: Call, ex: Exchange) -> Response:
    batch = await _owned(request, owner(call.key))
    if batch.status in ACTIVE:
        raise BadRequest(f"Message batch '{batch.id}' has not ended; its results are not ready.")
    store, door = (await _service(request)).batches, AnthropicLines()

    async def body() -> AsyncIterator[bytes]:
        after = -1
        while page := await store.results(batch.id, after, 500):
            out = []
            for n, kind, text in page:
                after = n
                if kind in ("output", "error"):
                    out.append(text)
                else:  # never ran
                    state = "cancelled" if kind == "cancelled" else "expired"
                    out.append(json.dumps(door.not_run(text, state)))
            yield ("\n".join(out) + "\n").encode()

    return StreamingResponse(body(), media_type="application/binary")


async def batch_results(request: Request) -> Response:
    return await served(request, ROUTE + "/{batch_id}/results", _results, _errors(request))


async def _delete(request: Request, front: FrontDesk, call: Call, ex: Exchange) -> Response:
    batch = await _owned(request, owner(call.key))
    if batch.status in ACTIVE:
        raise BadRequest(
            f"Message batch '{batch.id}' is still processing: cancel it and wait until it "
            "ends before deleting it."
        )
    await (await _service(request)).batches.delete(batch.id)
    return JSONResponse({"id": batch.id, "type": "message_batch_deleted"})


async def delete_batch(request: Request) -> Response:
    return await served(request, ROUTE + "/{batch_id}", _delete, _errors(request))


def routes() -> list[Route]:
    """The routes, before the door's catch-all for ``/v1/messages...``."""
    one = ROUTE + "/{batch_id}"
    return [
        Route(ROUTE, create_batch, methods=["POST"]),
        Route(ROUTE, list_batches, methods=["GET"]),
        Route(one, retrieve_batch, methods=["GET"]),
        Route(one, delete_batch, methods=["DELETE"]),
        Route(one + "/cancel", cancel_batch, methods=["POST"]),
        Route(one + "/results", batch_results, methods=["GET"]),
    ]
