"""The Ollama door's part of ``/openapi.json``: its routes, bodies, answers and error shape.

Merged into the gateway's document by :func:`with_ollama_api`, so one document still
describes every route and the fuzz run drives this door too. Its errors are
``OllamaError`` (``{"error": "..."}``).
"""

from __future__ import annotations

from typing import Any

from gateway.http.openapi import error_answers, json_body, ref

ERROR_STATUSES = {
    "400": "A malformed request, or a refused field (images, suffix, template, ...).",
    "401": "A missing or unknown key (Bearer).",
    "403": "The key may not do this (disabled, expired).",
    "404": "An unknown model (or one the key may not use).",
    "413": "The body is larger than the configured limit.",
    "429": "The key's limits or budget; see retry-after.",
    "500": "A gateway bug.",
    "502": "The upstream or its job failed.",
    "503": "The grid is busy or unavailable; retry later.",
    "504": "The request's deadline passed.",
}


def _errors(*codes: str) -> dict[str, Any]:
    return error_answers(ERROR_STATUSES, "OllamaError", *codes)


_OBJECT: dict[str, Any] = {"type": "object"}
_COMPLETION_ERRORS = ("400", "401", "403", "404", "413", "429", "502", "503", "504")


def schemas() -> dict[str, Any]:
    common = {
        "model": {"type": "string", "minLength": 1, "description": "An Ollama tag or a name"},
        "format": {
            "description": '"json", or a JSON schema the answer must match',
            "anyOf": [{"enum": ["json", ""]}, _OBJECT],
        },
        "options": {
            "type": "object",
            "description": "num_predict (token cap) and stop are read; the rest is ignored",
        },
        "stream": {"type": "boolean", "default": True},
        "keep_alive": {"description": "accepted, not forwarded"},
    }
    message = {
        "type": "object",
        "required": ["role"],
        "properties": {
            "role": {"enum": ["system", "user", "assistant", "tool"]},
            "content": {"type": "string"},
            "tool_calls": {"type": "array", "items": _OBJECT},
            "tool_name": {"type": "string"},
        },
    }
    answer = {
        "type": "object",
        "required": ["model", "created_at", "done"],
        "properties": {
            "model": {"type": "string"},
            "created_at": {"type": "string"},
            "message": message,
            "response": {"type": "string"},
            "done": {"type": "boolean"},
            "done_reason": {"enum": ["stop", "length"]},
            **{
                name: {"type": "integer"}
                for name in (
                    "total_duration",
                    "load_duration",
                    "prompt_eval_count",
                    "prompt_eval_duration",
                    "eval_count",
                    "eval_duration",
                )
            },
            "context": {"type": "array", "items": {"type": "integer"}},
        },
    }
    return {
        "OllamaError": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string"}},
        },
        "OllamaChatRequest": {
            "type": "object",
            "required": ["model", "messages"],
            "properties": {
                **common,
                "messages": {"type": "array", "minItems": 1, "items": message},
                "tools": {"type": "array", "items": _OBJECT},
            },
        },
        "OllamaGenerateRequest": {
            "type": "object",
            "required": ["model", "prompt"],
            "properties": {
                **common,
                "prompt": {"type": "string", "minLength": 1},
                "system": {"type": "string"},
                "raw": {"type": "boolean"},
                "context": {"type": "array", "items": {"type": "integer"}},
            },
        },
        "OllamaAnswer": answer,
    }


def _listing(summary: str, schema: dict[str, Any], *errors: str) -> dict[str, Any]:
    return {
        "summary": summary,
        "responses": {
            "200": {"description": "OK", "content": json_body(schema)},
            **_errors(*errors),
        },
    }


def paths() -> dict[str, Any]:
    ndjson = {"application/x-ndjson": {"schema": {"type": "string"}}}

    def completion(summary: str, request: str) -> dict[str, Any]:
        return {
            "post": {
                "summary": summary,
                "requestBody": {"required": True, "content": json_body(ref(request))},
                "responses": {
                    "200": {
                        "description": "Newline-delimited JSON chunks (the default), or one "
                        "object with `stream: false`; an error after the first chunk is a last "
                        '`{"error": ...}` line.',
                        "content": {**json_body(ref("OllamaAnswer")), **ndjson},
                    },
                    **_errors(*_COMPLETION_ERRORS),
                },
            }
        }

    models = {"type": "object", "required": ["models"], "properties": {"models": {"type": "array"}}}
    show = {
        "type": "object",
        "required": ["model"],
        "properties": {"model": {"type": "string", "minLength": 1}},
    }
    return {
        "/api/chat": completion("Ollama's chat", "OllamaChatRequest"),
        "/api/generate": completion("Ollama's generate", "OllamaGenerateRequest"),
        "/api/tags": {"get": _listing("The models the key may use, by tag", models, "401")},
        "/api/ps": {"get": _listing("Loaded models: none (the grid loads them)", models, "401")},
        "/api/show": {
            "post": {
                **_listing("One model's details", _OBJECT, "400", "401", "404"),
                "requestBody": {"required": True, "content": json_body(show)},
            }
        },
        "/api/version": {
            "get": {
                **_listing("The version of Ollama's API this door follows", _OBJECT),
                "security": [],
            }
        },
    }


def with_ollama_api(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with this door's routes and schemas."""
    for path, item in paths().items():
        for operation in item.values():
            operation.setdefault("security", [{"bearer": []}])
        doc["paths"][path] = item
    doc["components"]["schemas"].update(schemas())
    doc["info"]["description"] += (
        " Ollama's API (`/api/...`) answers its errors in Ollama's shape, `{\"error\": ...}`."
    )
    return doc
