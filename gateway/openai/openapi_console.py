"""The OpenAPI paths of the console's files (``/console/{name}``) and of ``GET /admin/live``.

``/`` itself (the console's page, or the plain probe answer with ``server.console: false``) is
described with the Anthropic door's paths, which name it as the base URL clients probe.

Kept beside :mod:`gateway.openai.openapi`, which merges them into the served document, so the
document describes every route the app serves.
"""

from __future__ import annotations

from typing import Any

_ERROR = {"$ref": "#/components/schemas/Error"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR}}}


def _text(description: str, *types: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {t: {"schema": {"type": "string"}} for t in types},
    }


_ACCOUNT = {
    "type": "object",
    "properties": {
        "account": {"type": "string"},
        "jobs_in_flight": {"type": "integer"},
        "queued": {"type": "integer"},
        "max_jobs": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
        "status_requests_per_tick": {"type": "integer"},
        "circuit": {"type": "string", "enum": ["closed", "open", "half_open"]},
    },
}

_LIVE = {
    "type": "object",
    "required": ["accounts", "upstream", "recent_failures", "jobs"],
    "properties": {
        "object": {"type": "string", "const": "live"},
        "at": {"type": "string"},
        "accounts": {"type": "array", "items": _ACCOUNT},
        "upstream": {"type": "object"},
        "recent_failures": {"type": "array", "items": {"type": "object"}},
        "jobs": {"type": "array", "items": {"type": "object"}},
    },
}


_SESSION = {
    "type": "object",
    "required": ["user", "admin"],
    "properties": {
        "user": {"type": "boolean"},
        "admin": {
            "anyOf": [
                {
                    "type": "object",
                    "required": ["name", "role"],
                    "properties": {"name": {"type": "string"}, "role": {"type": "string"}},
                },
                {"type": "null"},
            ]
        },
    },
}


def console_paths() -> dict[str, Any]:
    return {
        "/console/{name}": {
            "get": {
                "summary": "One of the console's static files",
                "security": [],
                "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": _text("The file", "text/javascript", "text/css", "text/html"),
                    "304": {"description": "Not modified (If-None-Match)"},
                    "404": _error("No such file (or the console is turned off)."),
                },
            }
        },
        "/console/session": {
            "get": {
                "summary": "Which doors the presented key opens (the console's sign-in); "
                "200 for any key, so a sign-in logs no error in the browser",
                "security": [],
                "responses": {
                    "200": {
                        "description": "Whether the key is a gateway key; an admin key's name "
                        "and role (null otherwise)",
                        "content": {"application/json": {"schema": _SESSION}},
                    },
                },
            }
        },
        "/admin/live": {
            "get": {
                "summary": "Jobs in flight and queued per account, upstream latency and errors, "
                "circuit breakers, recent failures (any admin key)",
                "responses": {
                    "200": {
                        "description": "The live state",
                        "content": {"application/json": {"schema": _LIVE}},
                    },
                    "401": _error("Missing or wrong admin key."),
                    "403": _error("Not an admin key."),
                    "404": _error("The admin endpoints are off: no admin key is configured."),
                },
            }
        },
    }
