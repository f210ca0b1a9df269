"""``/v1/files``: upload a JSONL file for a batch, list, read, download and delete it.

An upload streams in (:mod:`gateway.batches.upload`): the caps (``files.max_bytes``,
``max_lines``, ``max_line_bytes``) are checked as it arrives and its lines are stored a chunk
at a time, never held whole. A file is its uploading key's identity's
(``gateway.keys.digests.owner``): another key, or a new key with a removed key's name, gets a
404.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gateway.batches.files import StoredFile, new_file_id
from gateway.batches.jsonl import LineCutter
from gateway.batches.service import BatchService
from gateway.batches.upload import Upload, receive
from gateway.errors import BadRequest, NotFound
from gateway.http.exchange import Exchange
from gateway.http.responses import openai_error
from gateway.keys.digests import owner
from gateway.serving.desk import Call, FrontDesk
from gateway.serving.web import served

#: What ``purpose`` may be: this gateway runs batches, nothing else.
PURPOSES = ("batch",)


async def service(request: Request) -> BatchService:
    """The open file and batch stores (``app.state.batches``, built and closed with the app)."""
    batches: BatchService = request.app.state.batches
    return await batches.ready()


def missing(file_id: str) -> NotFound:
    return NotFound(f"No such File object: {file_id}", param="id", code="not_found")


async def owned_file(request: Request, file_id: str, key_id: str) -> StoredFile:
    """The file if the key identity ``key_id`` owns it, else the 404 of a missing one."""
    found = await (await service(request)).files.get(file_id, key_id)
    if found is None:
        raise missing(file_id)
    return found


# ---------------------------------------------------------------------- POST /v1/files


async def _create(request: Request, front: FrontDesk, call: Call, ex: Exchange) -> Response:
    files = (await service(request)).files
    options = files.settings
    now = time.time()
    record = StoredFile(
        new_file_id(), call.key.name, "upload.jsonl", "batch", 0, 0, now,
        now + options.retention_hours * 3600, "uploading", key_id=owner(call.key),
    )  # fmt: skip
    cutter = LineCutter(
        options.max_bytes, options.max_lines, options.max_line_bytes, options.chunk_bytes
    )
    upload = Upload(cutter)
    seq = 0
    begun = False

    async def store(chunk: str) -> None:
        nonlocal seq, begun
        if not begun:
            _check_purpose(upload.fields)
            await files.begin(record)
            begun = True
        await files.append(record.id, seq, chunk)
        seq += 1

    try:
        await receive(request.headers.get("content-type", ""), request.stream(), upload, store)
        if upload.filename is None:
            raise BadRequest("The form has no 'file' part.", param="file")
        _check_purpose(upload.fields)
        if cutter.lines == 0:
            raise BadRequest("The file is empty.", param="file")
        record.filename = upload.filename[:255]
        record.bytes, record.lines, record.status = cutter.stored, cutter.lines, "processed"
        if not begun:
            await files.begin(record)
        await files.commit(record)
    except BaseException:
        if begun:
            await files.delete(record.id, record.key_id)
        raise
    return JSONResponse(record.to_openai())


def _check_purpose(fields: dict[str, str]) -> None:
    purpose = fields.get("purpose")
    if purpose is None:
        raise BadRequest("Missing required parameter: 'purpose'.", param="purpose")
    if purpose not in PURPOSES:
        raise BadRequest(
            f"Invalid purpose '{purpose}': this gateway accepts files for batches "
            "(purpose 'batch').",
            param="purpose",
        )


async def create_file(request: Request) -> Response:
    return await served(request, "/v1/files", _create, openai_error)


# ---------------------------------------------------------------------- GET /v1/files


def page_params(request: Request, most: int, default: int) -> tuple[str | None, int, str]:
    """``after``, ``limit`` and ``order`` of a list request, checked."""
    query = request.query_params
    raw = query.get("limit", str(default))
    try:
        limit = int(raw)
    except ValueError:
        raise BadRequest(f"Invalid 'limit': {raw!r} is not an integer.", param="limit") from None
    if not 1 <= limit <= most:
        raise BadRequest(f"'limit' must be between 1 and {most}.", param="limit")
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise BadRequest("'order' must be 'asc' or 'desc'.", param="order")
    return query.get("after"), limit, order


def page(objects: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    """OpenAI's list object, from ``limit + 1`` rows (the extra one says there are more)."""
    data = objects[:limit]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(objects) > limit,
    }


async def _list(request: Request, front: FrontDesk, call: Call, ex: Exchange) -> Response:
    after, limit, order = page_params(request, 10_000, 10_000)
    purpose = request.query_params.get("purpose")
    files = (await service(request)).files
    found = await files.page(
        owner(call.key), purpose=purpose, after=after, limit=limit + 1, order=order
    )
    return JSONResponse(page([f.to_openai() for f in found], limit))


async def list_files(request: Request) -> Response:
    return await served(request, "/v1/files", _list, openai_error)


# ---------------------------------------------------------------------- one file


async def _retrieve(request: Request, front: FrontDesk, call: Call, ex: Exchange) -> Response:
    found = await owned_file(request, request.path_params["file_id"], owner(call.key))
    return JSONResponse(found.to_openai())


async def retrieve_file(request: Request) -> Response:
    return await served(request, "/v1/files/{file_id}", _retrieve, openai_error)


async def _content(request: Request, front: FrontDesk, call: Call, ex: Exchange) -> Response:
    found = await owned_file(request, request.path_params["file_id"], owner(call.key))
    files = (await service(request)).files

    async def body() -> AsyncIterator[bytes]:
        async for chunk in files.chunks(found.id):
            yield chunk.encode("utf-8")

    return StreamingResponse(body(), media_type="application/octet-stream")


async def file_content(request: Request) -> Response:
    return await served(request, "/v1/files/{file_id}/content", _content, openai_error)


async def _delete(request: Request, front: FrontDesk, call: Call, ex: Exchange) -> Response:
    file_id = request.path_params["file_id"]
    if not await (await service(request)).files.delete(file_id, owner(call.key)):
        raise missing(file_id)
    return JSONResponse({"id": file_id, "object": "file", "deleted": True})


async def delete_file(request: Request) -> Response:
    return await served(request, "/v1/files/{file_id}", _delete, openai_error)


def routes() -> list[Route]:
    return [
        Route("/v1/files", create_file, methods=["POST"]),
        Route("/v1/files", list_files, methods=["GET"]),
        Route("/v1/files/{file_id}", retrieve_file, methods=["GET"]),
        Route("/v1/files/{file_id}", delete_file, methods=["DELETE"]),
        Route("/v1/files/{file_id}/content", file_content, methods=["GET"]),
    ]
