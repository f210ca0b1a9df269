"""The Messages door's part of ``/openapi.json``: its routes, bodies, answers and error shape.

Merged into the gateway's document by :func:`with_messages_api`, so one
document still describes every route and the fuzz run drives this door too. Its errors are
``AnthropicError``, not OpenAI's ``Error``.
"""

from __future__ import annotations

from typing import Any

from gateway.anthropic import openapi_batches
from gateway.http.openapi import error_answers, json_body, ref

ERROR_STATUSES = {
    "400": "invalid_request_error: a malformed request, a refused block or field.",
    "401": "authentication_error: a missing or unknown key (x-api-key or Bearer).",
    "403": "permission_error: the key may not do this.",
    "404": "not_found_error: an unknown model.",
    "413": "request_too_large: the body is larger than the configured limit.",
    "415": "invalid_request_error: the body is not sent as application/json.",
    "429": "rate_limit_error: the key's limits or budget; see retry-after.",
    "500": "api_error: the upstream or its job failed (or a gateway bug).",
    "504": "timeout_error: the request's deadline passed.",
    "529": "overloaded_error: the upstream is full or unavailable; retry later.",
}


def _errors(*codes: str) -> dict[str, Any]:
    return error_answers(ERROR_STATUSES, "AnthropicError", *codes)


def _text_or(blocks: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [{"type": "string"}, {"type": "array", "items": blocks}]}


def schemas() -> dict[str, Any]:
    text = {
        "type": "object",
        "required": ["type", "text"],
        "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
    }
    block = {
        "type": "object",
        "required": ["type"],
        "description": "text, tool_use (assistant), tool_result (user); thinking blocks are "
        "dropped; image, document and other blocks are refused.",
        "properties": {"type": {"type": "string"}},
    }
    message = {
        "type": "object",
        "required": ["role", "content"],
        "properties": {
            "role": {
                "type": "string",
                "enum": ["user", "assistant", "system"],
                "description": "system turns may come anywhere (text blocks only); a last "
                "assistant turn with text is continued (prefill).",
            },
            "content": _text_or(block),
        },
    }
    tool = {
        "type": "object",
        "required": ["name", "input_schema"],
        "description": "A client tool; Anthropic's server tools (a dated `type` such as "
        "web_search_20250305) are accepted and not offered to the model.",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 128},
            "description": {"type": "string"},
            "input_schema": {"type": "object"},
        },
    }
    tool_choice = {
        "type": "object",
        "required": ["type"],
        "properties": {
            "type": {"type": "string", "enum": ["auto", "any", "tool", "none"]},
            "name": {"type": "string"},
            "disable_parallel_tool_use": {"type": "boolean"},
        },
    }
    common = {
        "model": {"type": "string", "minLength": 1},
        "messages": {"type": "array", "minItems": 1, "items": message},
        "system": _text_or(text),
        "tools": {"type": "array", "items": tool},
        "tool_choice": tool_choice,
    }
    ignored = {
        name: {"description": "Accepted, not forwarded."}
        for name in ("temperature", "top_p", "top_k", "metadata", "thinking", "service_tier")
    }
    usage = {
        "type": "object",
        "required": [
            "input_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
            "output_tokens",
        ],
        "properties": {
            "input_tokens": {"type": "integer"},
            "cache_creation_input_tokens": {"type": "integer"},
            "cache_read_input_tokens": {
                "type": "integer",
                "description": "The whole prompt on an answer from the response cache, else 0.",
            },
            "output_tokens": {"type": "integer"},
        },
    }
    return {
        "MessagesRequest": {
            "type": "object",
            "required": ["model", "max_tokens", "messages"],
            "properties": {
                **common,
                "max_tokens": {
                    "type": "integer",
                    "minimum": 1,
                    "description": "Clamped to the model's limit, not refused. 0 (warm "
                    "the prompt cache only) is refused: there is no prompt cache to warm.",
                },
                "stop_sequences": {"type": "array", "items": {"type": "string"}},
                "stream": {"type": "boolean"},
                **ignored,
            },
        },
        "CountTokensRequest": {
            "type": "object",
            "required": ["model", "messages"],
            "properties": common,
        },
        "AnthropicMessage": {
            "type": "object",
            "required": ["id", "type", "role", "content", "model", "stop_reason", "usage"],
            "properties": {
                "id": {"type": "string"},
                "type": {"const": "message"},
                "role": {"const": "assistant"},
                "content": {"type": "array", "items": {"type": "object"}},
                "model": {"type": "string"},
                "stop_reason": {
                    "type": "string",
                    "enum": ["end_turn", "max_tokens", "stop_sequence", "tool_use"],
                },
                "stop_sequence": {"type": ["string", "null"]},
                "usage": usage,
            },
        },
        "AnthropicError": {
            "type": "object",
            "required": ["type", "error"],
            "properties": {
                "type": {"const": "error"},
                "error": {
                    "type": "object",
                    "required": ["type", "message"],
                    "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
                },
                "request_id": {"type": "string"},
            },
        },
    }


def with_messages_api(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` (the OpenAI door's document) with this door's routes, schemas and key header."""
    security: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}]
    for path, item in {**paths(), **openapi_batches.paths()}.items():
        for operation in item.values():
            operation.setdefault("security", security)
        doc["paths"][path] = item
    doc["components"]["schemas"].update({**schemas(), **openapi_batches.schemas()})
    doc["components"]["securitySchemes"]["apiKey"] = {
        "type": "apiKey",
        "in": "header",
        "name": "x-api-key",
        "description": "A gateway key, as the anthropic SDKs send it (on every route).",
    }
    doc["info"]["description"] += (
        " The Anthropic Messages API (`/v1/messages`) answers its errors in Anthropic's shape, "
        '`{"type": "error", "error": {"type", "message"}}`.'
    )
    return doc


def paths() -> dict[str, Any]:
    events = {"type": "object", "required": ["data"], "properties": {"data": {"type": "string"}}}
    return {
        "/v1/messages": {
            "post": {
                "summary": "Anthropic Messages API: a message, or its stream of events",
                "requestBody": {"required": True, "content": json_body(ref("MessagesRequest"))},
                "responses": {
                    "200": {
                        "description": "A message, or server-sent events with `stream: true` "
                        "(message_start ... message_stop; ping while queued; an error after "
                        "the first byte is an `event: error`).",
                        "content": {
                            **json_body(ref("AnthropicMessage")),
                            "text/event-stream": {"schema": events},
                        },
                    },
                    **_errors("400", "401", "403", "404", "413", "415", "429", "500", "504", "529"),
                },
            }
        },
        "/v1/messages/count_tokens": {
            "post": {
                "summary": "The gateway's estimate of a Messages request's input tokens",
                "requestBody": {"required": True, "content": json_body(ref("CountTokensRequest"))},
                "responses": {
                    "200": {
                        "description": "The count",
                        "content": json_body(
                            {
                                "type": "object",
                                "required": ["input_tokens"],
                                "properties": {"input_tokens": {"type": "integer"}},
                            }
                        ),
                    },
                    **_errors("400", "401", "404", "413", "415"),
                },
            }
        },
        "/": {
            "get": {
                "summary": "The base URL answers (Claude Code probes it)",
                "security": [],
                "responses": {"200": {"description": "OK"}},
            }
        },
    }
