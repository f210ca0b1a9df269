"""The answers of chat and text completions in ``/openapi.json``: objects, chunks, headers.

Each schema states what the gateway really sends (``tests/e2e/test_openapi_answers_e2e.py``
validates real answers against them): the keys always present are required, the ones that
may be null say so, and streamed chunks have schemas of their own. Strictly generated clients
(openapi-generator for Java, Go, Rust, TypeScript) break on any difference.
"""

from __future__ import annotations

from typing import Any


def _null(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


_STR = {"type": "string"}
_INT = {"type": "integer"}
_FINISH = {"type": "string", "enum": ["stop", "length", "tool_calls", "content_filter"]}
_USAGE = {
    "type": "object",
    "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
    "properties": {"prompt_tokens": _INT, "completion_tokens": _INT, "total_tokens": _INT},
}
_ENVELOPE = ["id", "object", "created", "model", "system_fingerprint", "choices"]


def _envelope(kind: str, choice: dict[str, Any], usage: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": _ENVELOPE,
        "properties": {
            "id": _STR,
            "object": {"type": "string", "enum": [kind]},
            "created": _INT,
            "model": _STR,
            "system_fingerprint": _STR,
            "choices": {"type": "array", "items": choice},
            "usage": usage,
        },
    }


def _call(streamed: bool) -> dict[str, Any]:
    function = {
        "type": "object",
        "required": [] if streamed else ["name", "arguments"],
        "properties": {"name": _STR, "arguments": {"type": "string", "description": "JSON"}},
    }
    properties: dict[str, Any] = {
        "id": _STR,
        "type": {"type": "string", "enum": ["function"]},
        "function": function,
    }
    if streamed:  # id, type and name come in a call's first piece only
        properties["index"] = _INT
        function_call = {
            "type": "object",
            "required": ["index", "function"],
            "properties": properties,
        }
    else:
        function_call = {
            "type": "object",
            "required": ["id", "type", "function"],
            "properties": properties,
        }
    return {"anyOf": [function_call, _custom_call(streamed)]}


def _custom_call(streamed: bool) -> dict[str, Any]:
    """A custom (free-text) tool's call: its input as text; streamed, it comes whole."""
    properties: dict[str, Any] = {
        "id": _STR,
        "type": {"type": "string", "enum": ["custom"]},
        "custom": {
            "type": "object",
            "required": ["name", "input"],
            "properties": {"name": _STR, "input": _STR},
        },
    }
    required = ["id", "type", "custom"]
    if streamed:
        properties["index"] = _INT
        required.append("index")
    return {"type": "object", "required": required, "properties": properties}


def _text_choice(finish: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["index", "text", "logprobs", "finish_reason"],
        "properties": {
            "index": _INT,
            "text": _STR,
            "logprobs": {"type": "null"},
            "finish_reason": finish,
        },
    }


def answer_schemas() -> dict[str, Any]:
    message = {
        "type": "object",
        "required": ["role", "content", "refusal"],
        "properties": {
            "role": {"type": "string", "enum": ["assistant"]},
            "content": _null(_STR),
            "refusal": {"type": "null", "description": "Always null: the models never refuse."},
            "tool_calls": {"type": "array", "items": _call(False)},
        },
    }
    chat_choice = {
        "type": "object",
        "required": ["index", "message", "logprobs", "finish_reason"],
        "properties": {
            "index": _INT,
            "message": message,
            "logprobs": {"type": "null", "description": "Always null (no probabilities)."},
            "finish_reason": _FINISH,
        },
    }
    text_choice = _text_choice(_FINISH)
    delta = {
        "type": "object",
        "properties": {
            "role": {"type": "string", "enum": ["assistant"]},
            "content": _STR,
            "tool_calls": {"type": "array", "items": _call(True)},
        },
    }
    chunk_choice = {
        "type": "object",
        "required": ["index", "delta", "logprobs", "finish_reason"],
        "properties": {
            "index": _INT,
            "delta": delta,
            "logprobs": {"type": "null"},
            "finish_reason": _null(_FINISH),
        },
    }
    text_chunk_choice = _text_choice(_null(_FINISH))
    chunk_usage = _null(
        {
            **_USAGE,
            "description": "With stream_options.include_usage: null on every chunk but "
            "the last, which has empty choices and the usage.",
        }
    )
    return {
        "ChatCompletion": _envelope("chat.completion", chat_choice, _USAGE),
        "Completion": _envelope("text_completion", text_choice, _USAGE),
        "ChatCompletionChunk": _envelope("chat.completion.chunk", chunk_choice, chunk_usage),
        # No "usage": null on text chunks (OpenAI's spec allows none); the last has the usage.
        "CompletionChunk": _envelope("text_completion", text_chunk_choice, _USAGE),
    }


def _header(description: str) -> dict[str, Any]:
    return {"description": description, "schema": _STR}


#: The headers of a completion's answer (and of its errors, where they apply).
ANSWER_HEADERS = {
    "x-request-id": _header("The request's id, also in the gateway's logs."),
    "x-job-id": _header("The upstream job id(s), comma-separated, one per choice."),
    **{
        f"x-ratelimit-{word}-{unit}": _header(f"The key's {unit} limit: {word}.")
        for word in ("limit", "remaining", "reset")
        for unit in ("requests", "tokens")
    },
}
RETRY_HEADERS = {
    "x-request-id": ANSWER_HEADERS["x-request-id"],
    "retry-after": _header("Seconds to wait before retrying."),
}


def with_headers(operation: dict[str, Any]) -> dict[str, Any]:
    """``operation`` with the headers its answers carry."""
    for status, answer in operation["responses"].items():
        if status == "200":
            answer["headers"] = dict(ANSWER_HEADERS)
        elif status in ("429", "503"):
            answer["headers"] = dict(RETRY_HEADERS)
        else:
            answer["headers"] = {"x-request-id": ANSWER_HEADERS["x-request-id"]}
    return operation
