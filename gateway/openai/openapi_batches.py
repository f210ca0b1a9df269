"""The Files and Batch APIs' part of the gateway's ``/openapi.json`` (merged in by
:mod:`gateway.openai.openapi`); the objects as OpenAI defines them."""

from __future__ import annotations

from typing import Any

_ERRORS = {
    "400": "Invalid request (a bad field, a malformed form).",
    "401": "Missing or unknown API key.",
    "403": "A gateway key where an admin key is needed.",
    "404": "No such file or batch for this key.",
    "409": "The batch can no longer be cancelled.",
    "413": "The upload is larger than files.max_bytes, or has too many or too long lines.",
    "415": "The upload is not multipart/form-data.",
    "503": "The gateway cannot reach its database.",
}
_STR = {"type": "string"}
_INT = {"type": "integer"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _op(summary: str, answer: dict[str, Any], *codes: str, **more: Any) -> dict[str, Any]:
    errors = {c: {"description": _ERRORS[c], "content": _json(_ref("Error"))} for c in codes}
    return {"summary": summary, "responses": {"200": answer, **errors}, **more}


def _ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": _json(schema)}


def _path(name: str) -> list[dict[str, Any]]:
    return [{"name": name, "in": "path", "required": True, "schema": _STR}]


def _query(*names: str) -> list[dict[str, Any]]:
    return [{"name": n, "in": "query", "required": False, "schema": _STR} for n in names]


def _list(item: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["object", "data", "has_more"],
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": _ref(item)},
            "first_id": {"type": ["string", "null"]},
            "last_id": {"type": ["string", "null"]},
            "has_more": {"type": "boolean"},
        },
    }


def paths() -> dict[str, Any]:
    upload = {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "purpose"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "purpose": {"type": "string", "enum": ["batch"]},
                    },
                }
            }
        },
    }
    create = {
        "type": "object",
        "required": ["input_file_id", "endpoint", "completion_window"],
        "properties": {
            "input_file_id": _STR,
            "endpoint": {
                "type": "string",
                "enum": ["/v1/chat/completions", "/v1/completions", "/v1/responses"],
            },
            "completion_window": {"type": "string", "enum": ["24h"]},
            "metadata": {"type": ["object", "null"], "additionalProperties": _STR},
        },
    }
    file_id, batch_id = _path("file_id"), _path("batch_id")
    return {
        "/v1/files": {
            "post": _op(
                "Upload a JSONL file of batch requests (streamed, within the caps)",
                _ok("The file", _ref("OpenAIFile")), "400", "401", "413", "415", "503",
                requestBody=upload,
            ),
            "get": _op(
                "This key's files", _ok("A page of files", _list("OpenAIFile")), "400", "401",
                parameters=_query("after", "limit", "order", "purpose"),
            ),
        },
        "/v1/files/{file_id}": {
            "get": _op("One file", _ok("The file", _ref("OpenAIFile")), "401", "404",
                       parameters=file_id),
            "delete": _op(
                "Delete a file", _ok("Deleted", _ref("DeletedFile")), "401", "404",
                parameters=file_id,
            ),
        },
        "/v1/files/{file_id}/content": {
            "get": _op(
                "A file's contents",
                {"description": "The JSONL", "content": {"application/octet-stream": {
                    "schema": {"type": "string", "format": "binary"}}}},
                "401", "404", parameters=file_id,
            ),
        },
        "/v1/batches": {
            "post": _op(
                "Start a batch of the input file's requests",
                _ok("The batch", _ref("Batch")), "400", "401", "404", "413", "415", "503",
                requestBody={"required": True, "content": _json(create)},
            ),
            "get": _op(
                "This key's batches, newest first", _ok("A page of batches", _list("Batch")),
                "400", "401", parameters=_query("after", "limit"),
            ),
        },
        "/v1/batches/{batch_id}": {
            "get": _op("One batch", _ok("The batch", _ref("Batch")), "401", "404",
                       parameters=batch_id),
        },
        "/admin/batches": {
            "get": _op(
                "Every key's batches and their progress (admin key)",
                _ok("The batches", {"type": "object"}), "400", "401", "403", "404", "503",
                parameters=_query("key", "door", "limit"),
            ),
        },
        "/admin/batches/{batch_id}/cancel": {
            "post": _op(
                "Cancel any key's running batch, of either door (admin key of the admin role)",
                _ok("The batch as the admin list shows it", {"type": "object"}),
                "401", "403", "404", "409", "503", parameters=batch_id,
            ),
        },
        "/admin/files/{file_id}/content": {
            "get": _op(
                "Any key's file, such as a batch's output or error file (admin key)",
                {"description": "The JSONL", "content": {"application/octet-stream": {
                    "schema": {"type": "string", "format": "binary"}}}},
                "401", "403", "404", "503", parameters=file_id,
            ),
        },
        "/v1/batches/{batch_id}/cancel": {
            "post": _op(
                "Cancel a batch: finished lines are kept, the rest cancelled",
                _ok("The batch", _ref("Batch")), "401", "404", "409", parameters=batch_id,
            ),
        },
    }  # fmt: skip


def schemas() -> dict[str, Any]:
    stamp = _INT
    return {
        "OpenAIFile": {
            "type": "object",
            "required": ["id", "object", "bytes", "created_at", "filename", "purpose", "status"],
            "properties": {
                "id": _STR, "object": {"const": "file"}, "bytes": _INT, "created_at": stamp,
                "expires_at": stamp, "filename": _STR,
                "purpose": {"type": "string", "enum": ["batch", "batch_output"]},
                "status": {"type": "string", "enum": ["processed"]},
            },
        },
        "DeletedFile": {
            "type": "object",
            "required": ["id", "object", "deleted"],
            "properties": {"id": _STR, "object": {"const": "file"}, "deleted": {"const": True}},
        },
        "Batch": {
            "type": "object",
            "required": [
                "id", "object", "endpoint", "input_file_id", "completion_window", "status",
                "created_at", "request_counts",
            ],
            "properties": {
                "id": _STR, "object": {"const": "batch"}, "endpoint": _STR,
                "input_file_id": _STR, "completion_window": _STR,
                "status": {"type": "string", "enum": [
                    "validating", "failed", "in_progress", "finalizing", "completed",
                    "expired", "cancelling", "cancelled",
                ]},
                "output_file_id": _STR, "error_file_id": _STR,
                **{name: stamp for name in (
                    "created_at", "in_progress_at", "expires_at", "finalizing_at",
                    "completed_at", "failed_at", "expired_at", "cancelling_at", "cancelled_at",
                )},
                "request_counts": {
                    "type": "object",
                    "required": ["total", "completed", "failed"],
                    "properties": {"total": _INT, "completed": _INT, "failed": _INT},
                },
                "errors": {"type": "object"},
                "metadata": {"type": ["object", "null"], "additionalProperties": _STR},
            },
        },
    }  # fmt: skip
