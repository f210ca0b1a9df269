"""Message Batches' part of the gateway's ``/openapi.json`` (merged in by
:mod:`gateway.anthropic.openapi`); errors in Anthropic's shape."""

from __future__ import annotations

from typing import Any

_ERRORS = {
    "400": "Invalid request, or a batch not in a state that allows it.",
    "401": "Missing or unknown API key.",
    "404": "No such message batch for this key.",
    "413": "The body is larger than the configured limit.",
    "529": "The gateway cannot reach its database.",
}
_STR = {"type": "string"}
_TIME = {"type": ["string", "null"], "format": "date-time"}
_COUNTS = ("processing", "succeeded", "errored", "canceled", "expired")
_ID = [{"name": "batch_id", "in": "path", "required": True, "schema": _STR}]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _op(summary: str, schema: dict[str, Any], *codes: str, **more: Any) -> dict[str, Any]:
    errors = {
        c: {"description": _ERRORS[c], "content": _json(_ref("AnthropicError"))} for c in codes
    }
    answer = {"description": summary, "content": _json(schema)}
    return {"summary": summary, "responses": {"200": answer, **errors}, **more}


def paths() -> dict[str, Any]:
    create = {
        "type": "object",
        "required": ["requests"],
        "properties": {
            "requests": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["custom_id", "params"],
                    "properties": {
                        "custom_id": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,64}$"},
                        "params": _ref("MessagesRequest"),
                    },
                },
            }
        },
    }
    listed = {
        "type": "object",
        "required": ["data", "has_more"],
        "properties": {
            "data": {"type": "array", "items": _ref("MessageBatch")},
            "has_more": {"type": "boolean"},
            "first_id": {"type": ["string", "null"]},
            "last_id": {"type": ["string", "null"]},
        },
    }
    deleted = {
        "type": "object",
        "required": ["id", "type"],
        "properties": {"id": _STR, "type": {"const": "message_batch_deleted"}},
    }
    query = [
        {"name": n, "in": "query", "required": False, "schema": _STR} for n in ("after_id", "limit")
    ]
    one = "/v1/messages/batches/{batch_id}"
    return {
        "/v1/messages/batches": {
            "post": _op(
                "Create a Message Batch", _ref("MessageBatch"), "400", "401", "413", "529",
                requestBody={"required": True, "content": _json(create)},
            ),
            "get": _op("This key's Message Batches", listed, "400", "401", parameters=query),
        },
        one: {
            "get": _op("One Message Batch", _ref("MessageBatch"), "401", "404", parameters=_ID),
            "delete": _op(
                "Delete an ended Message Batch", deleted, "400", "401", "404", parameters=_ID
            ),
        },
        one + "/cancel": {
            "post": _op(
                "Cancel a Message Batch", _ref("MessageBatch"), "401", "404", parameters=_ID
            ),
        },
        one + "/results": {
            "get": _op(
                "An ended batch's results, one JSON object per line", _STR, "400", "401", "404",
                parameters=_ID,
            ),
        },
    }  # fmt: skip


def schemas() -> dict[str, Any]:
    count = {"type": "integer"}
    return {
        "MessageBatch": {
            "type": "object",
            "required": [
                "id", "type", "processing_status", "request_counts", "created_at", "expires_at",
            ],
            "properties": {
                "id": _STR,
                "type": {"const": "message_batch"},
                "processing_status": {"enum": ["in_progress", "canceling", "ended"]},
                "request_counts": {
                    "type": "object",
                    "required": list(_COUNTS),
                    "properties": {n: count for n in _COUNTS},
                },
                **{n: _TIME for n in (
                    "created_at", "expires_at", "ended_at", "archived_at", "cancel_initiated_at",
                )},
                "results_url": {"type": ["string", "null"]},
            },
        }
    }  # fmt: skip
