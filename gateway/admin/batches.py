"""``GET /admin/batches`` and ``GET /admin/files/{file_id}/content``: every key's batches and
their result files, for an admin key (any role: they only read); ``POST
/admin/batches/{batch_id}/cancel``: any key's running batch cancelled, for an admin key of the
``admin`` role (through :meth:`BatchService.cancel`, as the doors' own cancels). The console's
Batches page uses them when signed in with an admin key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gateway.admin.keys import authorize
from gateway.admin.usage import admin_log, require_admin_reader
from gateway.batches.service import CANCELLABLE, BatchService
from gateway.batches.store import StoredBatch
from gateway.errors import BadRequest, Conflict, GatewayError, NotFound
from gateway.http.common import error_response
from gateway.state import runtime


async def _service(request: Request) -> BatchService:
    require_admin_reader(runtime(request), request)
    batches: BatchService = request.app.state.batches
    return await batches.ready()


def _row(batch: StoredBatch, counts: Any) -> dict[str, Any]:
    body = batch.body
    return {
        "id": batch.id,
        "door": batch.door,
        "key": batch.key_name,
        "status": batch.status,
        "endpoint": body.get("endpoint"),
        "created_at": int(batch.created_at),
        "expires_at": int(batch.expires_at),
        "counts": {
            "total": counts.total, "done": counts.done, "failed": counts.failed,
            "pending": counts.pending, "cancelled": counts.cancelled, "expired": counts.expired,
        },
        "output_file_id": body.get("output_file_id"),
        "error_file_id": body.get("error_file_id"),
    }  # fmt: skip


async def admin_batches(request: Request) -> Response:
    """Every key's batches, newest first (``key``, ``door``, ``limit`` up to 500)."""
    try:
        svc = await _service(request)
        query = request.query_params
        raw = query.get("limit", "100")
        if not raw.isdigit() or not 1 <= int(raw) <= 500:
            raise BadRequest("'limit' must be an integer between 1 and 500.", param="limit")
        door = query.get("door") or None
        found = await svc.batches.page(
            None, door, after=None, limit=int(raw), key_name=query.get("key") or None
        )
        rows = [_row(b, await svc.batches.counts(b.id)) for b in found]
    except GatewayError as error:
        return error_response(error)
    return JSONResponse({"object": "list", "data": rows})


async def admin_cancel(request: Request) -> Response:
    """Cancel any key's batch (either door's) that is running; one already cancelling or
    cancelled is answered as it is, one that ended otherwise is a 409 (as OpenAI's cancel)."""
    try:
        who = authorize(runtime(request), request, write=True)
        svc = await _service(request)
        batch_id = request.path_params["batch_id"]
        found = await svc.batches.get(batch_id, None, None)
        if found is None:
            raise NotFound(f"No batch found with id '{batch_id}'.", param="batch_id")
        if found.status not in (*CANCELLABLE, "cancelling", "cancelled"):
            raise Conflict(
                f"Cannot cancel a batch with status '{found.status}'.",
                code="batch_not_cancellable",
            )
        batch = await svc.cancel(found)
        admin_log.info("admin %s cancelled batch %s of key %s", who.name, batch.id, batch.key_name)
        row = _row(batch, await svc.batches.counts(batch.id))
    except GatewayError as error:
        return error_response(error)
    return JSONResponse(row)


async def admin_file_content(request: Request) -> Response:
    """Any key's file (a batch's output or error file), for download."""
    try:
        svc = await _service(request)
        file_id = request.path_params["file_id"]
        found = await svc.files.get(file_id, None)
        if found is None:
            raise NotFound(f"No such File object: {file_id}", param="id")
    except GatewayError as error:
        return error_response(error)

    async def body() -> AsyncIterator[bytes]:
        async for chunk in svc.files.chunks(found.id):
            yield chunk.encode("utf-8")

    return StreamingResponse(body(), media_type="application/octet-stream")


def routes() -> list[Route]:
    return [
        Route("/admin/batches", admin_batches, methods=["GET"]),
        Route("/admin/batches/{batch_id}/cancel", admin_cancel, methods=["POST"]),
        Route("/admin/files/{file_id}/content", admin_file_content, methods=["GET"]),
    ]
