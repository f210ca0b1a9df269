"""``/v1/batches``: OpenAI's Batch API over the gateway's own batch runner.

``POST /v1/batches`` reads the input file a chunk at a time, checks each line's form (JSON,
a unique ``custom_id``, ``POST`` to the batch's ``endpoint``) and stores the lines; a file
with bad lines fails the batch at once with OpenAI's ``errors`` list. Each line's body is then
checked by its endpoint when it runs (:mod:`gateway.openai.batch_lines`): a bad body fails
that line alone, in the error file, with the live endpoint's error.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.batches.jsonl import split_lines
from gateway.batches.service import CANCELLABLE
from gateway.batches.store import ACTIVE, Counts, Line, StoredBatch
from gateway.errors import BadRequest, Conflict, NotFound
from gateway.http.exchange import Exchange
from gateway.http.responses import openai_error
from gateway.keys.digests import owner
from gateway.openai.batch_lines import ENDPOINTS
from gateway.openai.files import owned_file, page, service
from gateway.serving.desk import Call, FrontDesk
from gateway.serving.web import read_json, served

DOOR = "openai"
#: OpenAI's one completion window.
WINDOWS = {"24h": 24 * 3600}
#: The most lines of a bad input file reported in the batch's ``errors``.
MAX_REPORTED = 100


def batch_object(batch: StoredBatch, counts: Counts | None = None) -> dict[str, Any]:
    """The OpenAI ``batch`` object (``counts``: the live counts of a running batch; an ended
    one's were written into its body when it ended). ``usage`` sums the tokens its lines'
    answers used; a batch made before the gateway counted them has none."""
    body = {**batch.body, "id": batch.id, "object": "batch", "status": batch.status}
    if counts is not None:
        body["request_counts"] = {
            "total": counts.total, "completed": counts.done, "failed": counts.failed,
        }  # fmt: skip
        if "usage" in body:
            body["usage"] = counts.usage()
    return body


async def render(request: Request, batch: StoredBatch) -> dict[str, Any]:
    counts = None
    if batch.status in ACTIVE:
        counts = await (await service(request)).batches.counts(batch.id)
    return batch_object(batch, counts)


# ---------------------------------------------------------------------- POST /v1/batches


def _request(data: Any) -> tuple[str, str, int, dict[str, str] | None]:
    if not isinstance(data, dict):
        raise BadRequest("The request body must be a JSON object.")
    file_id, endpoint = data.get("input_file_id"), data.get("endpoint")
    window, metadata = data.get("completion_window"), data.get("metadata")
    if not isinstance(file_id, str) or not file_id:
        raise BadRequest("Missing required parameter: 'input_file_id'.", param="input_file_id")
    if endpoint not in ENDPOINTS:
        raise BadRequest(
            f"Invalid 'endpoint': expected one of {', '.join(ENDPOINTS)}.", param="endpoint"
        )
    if window not in WINDOWS:
        raise BadRequest("Invalid 'completion_window': expected '24h'.", param="completion_window")
    if metadata is not None and not _good_metadata(metadata):
        raise BadRequest(
            "'metadata' must map at most 16 keys (64 characters) to strings (512 characters).",
            param="metadata",
        )
    return file_id, str(endpoint), WINDOWS[str(window)], metadata


def _good_metadata(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and len(value) <= 16
        and all(
            isinstance(k, str) and len(k) <= 64 and isinstance(v, str) and len(v) <= 512
            for k, v in value.items()
        )
    )


def _check_lines(
    texts: list[str], first: int, batch_id: str, endpoint: str, seen: set[str]
) -> tuple[list[Line], list[dict[str, Any]]]:
    """The lines of a piece of the input file, and what is wrong with them (OpenAI's
    ``BatchError``: ``line`` counts from 1)."""
    lines: list[Line] = []
    errors: list[dict[str, Any]] = []

    def bad(n: int, code: str, message: str, param: str | None = None) -> None:
        errors.append({"code": code, "message": message, "param": param, "line": n + 1})

    for n, text in enumerate(texts, start=first):
        try:
            item = json.loads(text)
        except ValueError:
            bad(n, "invalid_json_line", "This line is not valid JSON.")
            continue
        if not isinstance(item, dict):
            bad(n, "invalid_request", "Each line must be a JSON object.")
            continue
        custom_id = item.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            bad(n, "missing_required_parameter", "Missing 'custom_id'.", "custom_id")
        elif custom_id in seen:
            bad(
                n, "duplicate_custom_id", f"The custom_id '{custom_id}' is used twice.", "custom_id"
            )
        elif item.get("method") != "POST":
            bad(n, "invalid_method", "The 'method' must be 'POST'.", "method")
        elif item.get("url") != endpoint:
            bad(n, "mismatched_endpoint", f"The 'url' must be the batch's '{endpoint}'.", "url")
        elif not isinstance(item.get("body"), dict):
            bad(n, "missing_required_parameter", "Missing 'body' (a JSON object).", "body")
        else:
            seen.add(custom_id)
            lines.append(Line(batch_id, n, custom_id, item["body"]))
    return lines, errors


async def _create(request: Request, front: FrontDesk, call: Call, ex: Exchange) -> Response:
    rt = front.rt
    file_id, endpoint, window, metadata = _request(await read_json(request, rt.settings.limits))
    svc = await service(request)
    found = await owned_file(request, file_id, owner(call.key))
    if found.purpose != "batch":
        raise BadRequest("The input file's purpose must be 'batch'.", param="input_file_id")
    now = time.time()
    batch = StoredBatch(
        "batch_" + secrets.token_hex(12), call.key.name, DOOR, "validating", now, now + window,
        {
            "endpoint": endpoint, "input_file_id": file_id, "completion_window": "24h",
            "created_at": int(now), "expires_at": int(now + window),
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "usage": Counts().usage(),  # its lines' tokens, summed as they end
        },
        key_id=owner(call.key),
    )  # fmt: skip
    if metadata is not None:
        batch.body["metadata"] = metadata
    seen: set[str] = set()
    errors: list[dict[str, Any]] = []
    first = 0
    async for chunk in svc.files.chunks(found.id):
        texts = split_lines([chunk])
        lines, wrong = await asyncio.to_thread(_check_lines, texts, first, batch.id, endpoint, seen)
        first += len(texts)
        errors += wrong
        if not errors:
            await svc.batches.add_lines(lines)
    if errors:
        await svc.batches.delete(batch.id)  # its lines stored so far
        batch.status = "failed"
        batch.body["failed_at"] = int(now)
        batch.body["errors"] = {"object": "list", "data": errors[:MAX_REPORTED]}
    batch.body["request_counts"]["total"] = 0 if errors else first
    await svc.batches.put(batch)
    svc.runner.wake()
    return JSONResponse(batch_object(batch))


async def create_batch(request: Request) -> Response:
    return await served(request, "/v1/batches", _create, openai_error)


# ---------------------------------------------------------------------- reading


async def owned_batch(request: Request, batch_id: str, key_id: str) -> StoredBatch:
    """The batch if the key identity ``key_id`` owns it, else the 404 of a missing one."""
    found = await (await service(request)).batches.get(batch_id, key_id, DOOR)
    if found is None:
        raise NotFound(f"No batch found with id '{batch_id}'.", param="batch_id")
    return found


async def _retrieve(request: Request, front: FrontDesk, call: Call, ex: Exchange) -> Response:
    batch = await owned_batch(request, request.path_params["batch_id"], owner(call.key))
    return JSONResponse(await render(request, batch))


async def retrieve_batch(request: Request) -> Response:
    return await served(request, "/v1/batches/{batch_id}", _retrieve, openai_error)


async def _list(request: Request, front: FrontDesk, call: Call, ex: Exchange) -> Response:
    query = request.query_params
    raw = query.get("limit", "20")
    if not raw.isdigit() or not 1 <= int(raw) <= 100:
        raise BadRequest("'limit' must be an integer between 1 and 100.", param="limit")
    limit = int(raw)
    store = (await service(request)).batches
    found = await store.page(owner(call.key), DOOR, after=query.get("after"), limit=limit + 1)
    return JSONResponse(page([await render(request, b) for b in found], limit))


async def list_batches(request: Request) -> Response:
    return await served(request, "/v1/batches", _list, openai_error)


async def _cancel(request: Request, front: FrontDesk, call: Call, ex: Exchange) -> Response:
    svc = await service(request)
    batch = await owned_batch(request, request.path_params["batch_id"], owner(call.key))
    if batch.status not in (*CANCELLABLE, "cancelling", "cancelled"):
        raise Conflict(
            f"Cannot cancel a batch with status '{batch.status}'.", code="batch_not_cancellable"
        )
    return JSONResponse(await render(request, await svc.cancel(batch)))


async def cancel_batch(request: Request) -> Response:
    return await served(request, "/v1/batches/{batch_id}/cancel", _cancel, openai_error)


def routes() -> list[Route]:
    return [
        Route("/v1/batches", create_batch, methods=["POST"]),
        Route("/v1/batches", list_batches, methods=["GET"]),
        Route("/v1/batches/{batch_id}", retrieve_batch, methods=["GET"]),
        Route("/v1/batches/{batch_id}/cancel", cancel_batch, methods=["POST"]),
    ]
