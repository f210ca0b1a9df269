"""The OpenAPI description of the ``/admin`` keys, teams and audit routes (merged into the
served document by :func:`gateway.app.openapi_document`, as every door's are)."""

from __future__ import annotations

from typing import Any

_ERRORS = {
    "400": "Invalid body or query: the message names the field.",
    "401": "No admin key, or an unknown one.",
    "403": "A gateway key, or a viewer asking to change something.",
    "404": "No such key or team, or the admin endpoints are off.",
    "409": "The name is taken, or the key is revoked.",
    "503": "The key database cannot be reached; nothing was changed.",
}

_LIMITS: dict[str, Any] = {
    "models": {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}]},
    **{
        name: {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}]}
        for name in ("rpm", "tpm", "max_concurrent", "daily_tokens", "monthly_tokens")
    },
    "weight": {"anyOf": [{"type": "number", "exclusiveMinimum": 0}, {"type": "null"}]},
    "priority": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
    "metadata": {"anyOf": [{"type": "object"}, {"type": "null"}]},
}
_KEY_FIELDS: dict[str, Any] = {
    **_LIMITS,
    "account": {"anyOf": [{"type": "string"}, {"type": "null"}]},
    "team": {"anyOf": [{"type": "string"}, {"type": "null"}]},
    "expires_at": {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}]},
    "disabled": {"anyOf": [{"type": "boolean"}, {"type": "null"}]},
    "cache": {"anyOf": [{"type": "boolean"}, {"type": "null"}]},
}
_NAME = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"}


def _obj(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


def _op(
    summary: str,
    codes: tuple[str, ...],
    *,
    body: dict[str, Any] | None = None,
    ok: str = "200",
    params: tuple[str, ...] = (),
    query: tuple[str, ...] = (),
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "parameters": [
            *(
                {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                for p in params
            ),
            *(
                {"name": q, "in": "query", "required": False, "schema": {"type": "string"}}
                for q in query
            ),
        ],
        "responses": {
            ok: {
                "description": "OK",
                "content": {"application/json": {"schema": {"type": "object"}}},
            },
            **{
                code: {
                    "description": _ERRORS[code],
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                }
                for code in codes
            },
        },
    }
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body}},
        }
    return operation


def admin_paths() -> dict[str, Any]:
    read = ("401", "403", "404")
    write = ("400", "401", "403", "404", "409", "503")
    key_create = _obj({"name": _NAME, **_KEY_FIELDS}, ("name",))
    team_create = _obj({"name": _NAME, **_LIMITS}, ("name",))
    return {
        "/admin/whoami": {"get": _op("The admin key's name and role", read)},
        "/admin/keys": {
            "get": _op(
                "Keys, config's and database's, a page at a time (no secrets)",
                ("400", *read),
                query=("limit", "after", "team", "account", "q", "include_revoked"),
            ),
            "post": _op(
                "Create a key; the answer shows its secret once", write, body=key_create, ok="201"
            ),
        },
        "/admin/keys/{name}": {
            "get": _op("One key", read, params=("name",)),
            "patch": _op("Change a key", write, body=_obj(_KEY_FIELDS), params=("name",)),
            "delete": _op("Revoke a key (kept for the ledger)", write, params=("name",)),
        },
        "/admin/keys/{name}/rotate": {
            "post": _op(
                "New secret, shown once; the old one may stay valid for grace_seconds",
                write,
                body=_obj({"grace_seconds": {"type": "integer", "minimum": 0}}),
                params=("name",),
            )
        },
        "/admin/teams": {
            "get": _op("Teams", read),
            "post": _op("Create a team", write, body=team_create, ok="201"),
        },
        "/admin/teams/{name}": {
            "get": _op("One team", read, params=("name",)),
            "patch": _op("Change a team", write, body=_obj(_LIMITS), params=("name",)),
            "delete": _op("Delete a team without keys", write, params=("name",)),
        },
        "/admin/audit": {
            "get": _op("Changes, newest first", ("400", *read), query=("limit", "before")),
        },
    }


def with_admin_api(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` (the OpenAI door's document, whose ``Error`` schema these answers use) with
    this door's keys, teams and audit routes."""
    doc["paths"].update(admin_paths())
    return doc
