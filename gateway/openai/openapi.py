"""The OpenAPI 3.1 document of the gateway's own API, served at ``GET /openapi.json``.

Written by hand as data (not derived from the code) so it states the contract: the routes,
the request bodies the gateway reads, the answers, and the one error shape every failure
uses. Fields the gateway accepts and ignores (sampling parameters the upstream cannot honour)
are listed so clients and fuzzers know they are welcome. ``tests/test_openapi.py`` checks that
every route of the app is described and the fuzz run (``bench/fuzz.py``) drives the gateway
from this document.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

from gateway.config import LimitSettings
from gateway.http.openapi import error_answers, json_body, ref
from gateway.openai import openapi_batches as batches_openapi
from gateway.openai.openapi_answers import answer_schemas, with_headers
from gateway.openai.openapi_console import console_paths
from gateway.openai.responses import openapi as responses_openapi

ERROR_STATUSES = {
    "400": "Invalid request: malformed JSON, a wrong type, a value out of range.",
    "401": "Missing or unknown API key.",
    "403": "The key may not do this.",
    "404": "Unknown model (or endpoint).",
    "405": "A method the path does not serve; `Allow` lists those it does.",
    "413": "The body is larger than the configured limit.",
    "415": "The body is not sent as application/json.",
    "429": "A rate limit, budget or the upstream's own limit; see Retry-After.",
    "500": "A bug in the gateway (never expected; logged with the request id).",
    "502": "The upstream service failed, or the job failed.",
    "503": "The upstream is unavailable (circuit open) or the gateway is shutting down.",
    "504": "The request's deadline passed before the job finished.",
}


def _version() -> str:
    try:
        return metadata.version("llm-gateway")
    except metadata.PackageNotFoundError:
        return "unknown"


def _errors(*codes: str) -> dict[str, Any]:
    return error_answers(ERROR_STATUSES, "Error", *codes)


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _stop(limits: LimitSettings) -> dict[str, Any]:
    most = limits.max_stop_sequences
    return {
        "description": f"Up to {most} sequences (limits.max_stop_sequences) where the answer "
        "stops; not included.",
        "anyOf": [
            {"type": "string"},
            {"type": "array", "items": {"type": "string"}, "maxItems": most},
            {"type": "null"},
        ],
    }


_IGNORED_NUMBERS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")


def _max_tokens(limits: LimitSettings, least: int, default: int | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer", "minimum": least, "maximum": limits.max_tokens}
    if default is not None:
        schema["default"] = default
    return {
        **_nullable(schema),
        "description": "At most limits.max_tokens; lowered to what the model's context window "
        "leaves after the prompt.",
    }


def _sampling_properties(limits: LimitSettings) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "model": {
            "type": "string",
            "minLength": 1,
            "description": "A configured model name or alias (GET /v1/models).",
        },
        "stream": {"type": "boolean", "default": False},
        "stream_options": _nullable(
            {
                "type": "object",
                "properties": {"include_usage": {"type": "boolean"}},
            }
        ),
        "n": {
            "type": "integer",
            "minimum": 1,
            "maximum": limits.max_n,
            "default": 1,
            "description": "Choices; one upstream job each (limits.max_n; on /v1/completions, "
            "n times the number of prompts).",
        },
        "stop": _stop(limits),
        "max_tokens": _max_tokens(limits, 1),
        "logprobs": {
            "description": "Not available (the upstream reports no probabilities): true is refused."
        },
        "user": {"type": "string", "description": "Accepted and ignored."},
        "seed": {"type": "integer", "description": "Accepted and ignored."},
    }
    for name in _IGNORED_NUMBERS:
        properties[name] = {"type": "number", "description": "Accepted and ignored."}
    return properties


def _schemas(limits: LimitSettings) -> dict[str, Any]:
    text_part = {
        "type": "object",
        "required": ["type", "text"],
        "properties": {
            "type": {"type": "string", "enum": ["text", "input_text"]},
            "text": {"type": "string"},
        },
    }
    message = {
        "type": "object",
        "required": ["role"],
        "properties": {
            "role": {
                "type": "string",
                "enum": ["system", "developer", "user", "assistant", "tool", "function"],
            },
            "content": {
                "anyOf": [
                    {"type": "string"},
                    {
                        "type": "array",
                        "items": text_part,
                        "description": "Text parts only; other part types are refused.",
                    },
                    {"type": "null"},
                ]
            },
            "name": {"type": "string"},
            "tool_call_id": {"type": "string"},
            "tool_calls": {"type": "array", "items": {"type": "object"}},
        },
    }
    function = {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 64},
            "description": {"type": "string"},
            "parameters": {"type": "object"},
            "strict": _nullable({"type": "boolean"}),
        },
    }
    chat = {
        "type": "object",
        "required": ["model", "messages"],
        "properties": {
            **_sampling_properties(limits),
            "messages": {
                "type": "array",
                "minItems": 1,
                "maxItems": limits.max_messages,
                "items": ref("ChatMessage"),
                "description": "At most limits.max_messages messages.",
            },
            "max_completion_tokens": _max_tokens(limits, 1),
            "tools": {
                "type": "array",
                "items": {
                    "anyOf": [
                        {
                            "type": "object",
                            "required": ["type", "function"],
                            "properties": {
                                "type": {"type": "string", "enum": ["function"]},
                                "function": function,
                            },
                        },
                        {
                            "type": "object",
                            "required": ["type", "custom"],
                            "description": "A free-text tool: the model's call carries its "
                            "input as text. A grammar format is not enforced.",
                            "properties": {
                                "type": {"type": "string", "enum": ["custom"]},
                                "custom": {
                                    "type": "object",
                                    "required": ["name"],
                                    "properties": {
                                        "name": {"type": "string", "minLength": 1, "maxLength": 64},
                                        "description": {"type": "string"},
                                        "format": {"type": "object"},
                                    },
                                },
                            },
                        },
                    ]
                },
            },
            "tool_choice": {
                "anyOf": [
                    {"type": "string", "enum": ["none", "auto", "required"]},
                    {"type": "object"},
                ]
            },
            "response_format": {
                "type": "object",
                "required": ["type"],
                "properties": {
                    "type": {"type": "string", "enum": ["text", "json_object", "json_schema"]},
                    "json_schema": {"type": "object"},
                },
            },
        },
    }
    completion = {
        "type": "object",
        "required": ["model", "prompt"],
        "properties": {
            **_sampling_properties(limits),
            "prompt": {
                "description": "Text, or a list of texts (one choice each); token ids are refused.",
                "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
            },
            "echo": {"type": "boolean", "default": False},
            "max_tokens": _max_tokens(limits, 0, 16),
        },
    }
    model = {
        "type": "object",
        "required": ["id", "object", "created", "owned_by"],
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string", "enum": ["model"]},
            "created": {"type": "integer"},
            "owned_by": {"type": "string"},
        },
    }
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["message", "type", "param", "code"],
                    "properties": {
                        "message": {"type": "string"},
                        "type": {"type": "string"},
                        "param": _nullable({"type": "string"}),
                        "code": _nullable({"type": "string"}),
                    },
                }
            },
        },
        "ChatMessage": message,
        "ChatCompletionRequest": chat,
        "CompletionRequest": completion,
        "Model": model,
        "ModelList": {
            "type": "object",
            "required": ["object", "data"],
            "properties": {
                "object": {"type": "string", "enum": ["list"]},
                "data": {"type": "array", "items": model},
            },
        },
        "UsageReport": {
            "type": "object",
            "required": ["object", "since", "until", "data"],
            "properties": {
                "object": {"type": "string", "enum": ["usage_report"]},
                "since": {"type": "string"},
                "until": {"type": "string"},
                "data": {"type": "array", "items": {"type": "object"}},
            },
        },
    }


_TIMEOUT_HEADER = {
    "name": "x-stainless-timeout",
    "in": "header",
    "required": False,
    "description": "The client's own timeout in seconds: caps the request's deadline.",
    "schema": {"type": "string"},
}
_RANGE = [
    {
        "name": name,
        "in": "query",
        "required": False,
        "description": "ISO 8601 date or time (default: the last 30 days).",
        "schema": {"type": "string"},
    }
    for name in ("since", "until")
]


#: One server-sent event: ``data`` is a chunk as JSON text, an error, or ``[DONE]``.
_SSE_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {"data": {"type": "string"}, "event": {"type": "string"}},
}


def _completion_operation(summary: str, request: str, answer: str) -> dict[str, Any]:
    chunk = "ChatCompletionChunk" if answer == "ChatCompletion" else "CompletionChunk"
    return with_headers(
        {
            "summary": summary,
            "parameters": [_TIMEOUT_HEADER],
            "requestBody": {"required": True, "content": json_body(ref(request))},
            "responses": {
                "200": {
                    "description": "The answer: one JSON object, or server-sent events with "
                    f"`stream: true` (each `data:` a {chunk} as JSON, then `data: [DONE]`; an "
                    'error after the first byte arrives as `data: {"error": ...}`).',
                    "content": {
                        **json_body(ref(answer)),
                        "text/event-stream": {"schema": _SSE_EVENT},
                    },
                },
                **_errors(
                    "400", "401", "403", "404", "413", "415", "429", "500", "502", "503", "504"
                ),
            },
        }
    )


def _plain(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description}
    if schema is not None:
        answer["content"] = json_body(schema)
    return answer


def openapi_document(limits: LimitSettings | None = None) -> dict[str, Any]:
    """A fresh copy of the document (callers may change theirs), stating ``limits``."""
    limits = limits or LimitSettings()
    status = {"type": "object", "properties": {"status": {"type": "string"}}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "LLM gateway",
            "version": _version(),
            "description": "An OpenAI-compatible API in front of the Distributed LLM Service. "
            'Every error is `{"error": {"message", "type", "param", "code"}}`. A path called '
            "with a method it does not list answers 405 (components.responses.MethodNotAllowed) "
            "with `Allow` naming the methods it does.",
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/chat/completions": {
                "post": _completion_operation(
                    "Chat completion", "ChatCompletionRequest", "ChatCompletion"
                )
            },
            "/v1/completions": {
                "post": _completion_operation("Text completion", "CompletionRequest", "Completion")
            },
            **responses_openapi.paths(),
            **batches_openapi.paths(),
            "/v1/models": {
                "get": {
                    "summary": "The models this key may use",
                    "responses": {
                        "200": _plain("The models", ref("ModelList")),
                        **_errors("401"),
                    },
                }
            },
            "/v1/models/{model}": {
                "get": {
                    "summary": "One model",
                    "parameters": [
                        {
                            "name": "model",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": _plain("The model", ref("Model")),
                        **_errors("401", "404"),
                    },
                }
            },
            "/v1/usage": {
                "get": {
                    "summary": "The calling key's own usage by model",
                    "parameters": _RANGE,
                    "responses": {
                        "200": _plain("Usage", ref("UsageReport")),
                        **_errors("400", "401"),
                    },
                }
            },
            "/admin/usage": {
                "get": {
                    "summary": "Usage of every key (admin key)",
                    "parameters": [
                        *_RANGE,
                        {
                            "name": "key",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string"},
                        },
                    ],
                    "responses": {
                        "200": _plain("Usage", ref("UsageReport")),
                        **_errors("400", "401", "403", "404"),
                    },
                }
            },
            "/admin/reload": {
                "post": {
                    "summary": "Re-read keys and models from the config file (admin key)",
                    "responses": {
                        "200": _plain("What changed", {"type": "object"}),
                        **_errors("400", "401", "403", "404"),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "The process answers",
                    "security": [],
                    "responses": {"200": _plain("Alive", status)},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Ready: config loaded, upstream reachable, not draining",
                    "security": [],
                    "responses": {
                        "200": _plain("Ready", {"type": "object"}),
                        "503": _plain("Not ready", {"type": "object"}),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "Prometheus text format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": _plain("OpenAPI 3.1", {"type": "object"})},
                }
            },
            **console_paths(),
        },
        "components": {
            "responses": {
                "MethodNotAllowed": {
                    "description": ERROR_STATUSES["405"],
                    "headers": {"allow": {"schema": {"type": "string"}}},
                    "content": json_body(ref("Error")),
                }
            },
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A gateway key (never the upstream token).",
                }
            },
            "schemas": {
                **_schemas(limits),
                **answer_schemas(),
                **responses_openapi.schemas(),
                **batches_openapi.schemas(),
            },
        },
    }
