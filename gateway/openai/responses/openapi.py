"""The Responses API's part of the gateway's ``/openapi.json``: its routes and objects.

Written as data, like :mod:`gateway.openai.openapi` (which merges it in): what the gateway
reads and what it answers, with the fields it always sends marked required, so a client
generated from it accepts every real answer (``tests/e2e`` validates answers against it).
"""

from __future__ import annotations

from typing import Any

_ERRORS = {
    "400": "Invalid request, or a feature this service cannot honour.",
    "401": "Missing or unknown API key.",
    "403": "The key may not do this.",
    "404": "Unknown model, or no such response for this key.",
    "413": "The body is larger than the configured limit.",
    "415": "The body is not sent as application/json.",
    "429": "A rate limit, budget or the upstream's own limit; see Retry-After.",
    "500": "A bug in the gateway (never expected; logged with the request id).",
    "502": "The upstream service failed, or the job failed.",
    "503": "The upstream or the response store is unavailable, or the gateway is shutting down.",
    "504": "The request's deadline passed before the job finished.",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _errors(*codes: str) -> dict[str, Any]:
    return {code: {"description": _ERRORS[code], "content": _json(_ref("Error"))} for code in codes}


def _null(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _obj(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


_STR = {"type": "string"}
_INT = {"type": "integer"}
_ID_PARAM = {"name": "response_id", "in": "path", "required": True, "schema": _STR}
_SSE = {
    "type": "object",
    "required": ["event", "data"],
    "description": "`event:` names the type; `data:` is a ResponsesStreamEvent as JSON.",
    "properties": {"event": _STR, "data": _STR},
}


def schemas() -> dict[str, Any]:
    text_part = _obj(
        ["type", "text", "annotations", "logprobs"],
        type={"type": "string", "enum": ["output_text"]},
        text=_STR,
        annotations={"type": "array", "items": {"type": "object"}},
        logprobs={"type": "array", "items": {"type": "object"}},
    )
    message = _obj(
        ["id", "type", "role", "status", "content"],
        id=_STR,
        type={"type": "string", "enum": ["message"]},
        role={"type": "string", "enum": ["assistant"]},
        status={"type": "string", "enum": ["in_progress", "completed", "incomplete"]},
        content={"type": "array", "items": text_part},
    )
    call = _obj(
        ["id", "type", "call_id", "name", "arguments", "status"],
        id=_STR,
        type={"type": "string", "enum": ["function_call"]},
        call_id=_STR,
        name=_STR,
        namespace=_STR,
        arguments={"type": "string", "description": "JSON text."},
        status={"type": "string", "enum": ["in_progress", "completed", "incomplete"]},
    )
    custom_call = _obj(
        ["id", "type", "call_id", "name", "input", "status"],
        id=_STR,
        type={"type": "string", "enum": ["custom_tool_call"]},
        call_id=_STR,
        name=_STR,
        namespace=_STR,
        input={"type": "string", "description": "The custom tool's input, as text."},
        status={"type": "string", "enum": ["in_progress", "completed", "incomplete"]},
    )
    usage = _obj(
        [
            "input_tokens",
            "input_tokens_details",
            "output_tokens",
            "output_tokens_details",
            "total_tokens",
        ],
        input_tokens=_INT,
        input_tokens_details=_obj(["cached_tokens"], cached_tokens=_INT, cache_write_tokens=_INT),
        output_tokens=_INT,
        output_tokens_details=_obj(["reasoning_tokens"], reasoning_tokens=_INT),
        total_tokens=_INT,
    )
    status = ["queued", "in_progress", "completed", "incomplete", "failed", "cancelled"]
    response = _obj(
        [
            "id",
            "object",
            "created_at",
            "status",
            "background",
            "error",
            "incomplete_details",
            "instructions",
            "model",
            "output",
            "parallel_tool_calls",
            "tools",
            "tool_choice",
            "temperature",
            "top_p",
            "metadata",
            "text",
            "store",
            "truncation",
        ],
        id=_STR,
        object={"type": "string", "enum": ["response"]},
        created_at=_INT,
        completed_at=_null(_INT),
        status={"type": "string", "enum": status},
        background={"type": "boolean"},
        error=_null(_obj(["code", "message"], code=_STR, message=_STR)),
        incomplete_details=_null(_obj(["reason"], reason=_STR)),
        instructions={"description": "As the request gave it (string, items or null)."},
        max_output_tokens=_null(_INT),
        model=_STR,
        output={"type": "array", "items": {"anyOf": [message, call, custom_call]}},
        parallel_tool_calls={"type": "boolean"},
        previous_response_id=_null(_STR),
        store={"type": "boolean"},
        temperature=_null({"type": "number"}),
        top_p=_null({"type": "number"}),
        text={"type": "object"},
        tool_choice={"anyOf": [_STR, {"type": "object"}]},
        tools={"type": "array", "items": {"type": "object"}},
        truncation={"type": "string", "enum": ["auto", "disabled"]},
        usage=usage,
        metadata={"type": "object", "additionalProperties": _STR},
    )
    create = _obj(
        ["model"],
        model={"type": "string", "minLength": 1},
        input={
            "description": "Text, or items: messages (text parts only), function_call, "
            "custom_tool_call and their outputs, reasoning (dropped), item_reference.",
            "anyOf": [_STR, {"type": "array", "items": {"type": "object"}}],
        },
        instructions=_null({"anyOf": [_STR, {"type": "array", "items": {"type": "object"}}]}),
        max_output_tokens=_null({"type": "integer", "minimum": 1}),
        tools={
            "type": "array",
            "description": "function, custom and namespace tools are offered (a custom "
            "tool's grammar is not enforced); hosted tools are accepted and not offered.",
            "items": _obj(["type"], type=_STR),
        },
        tool_choice={
            "anyOf": [{"type": "string", "enum": ["none", "auto", "required"]}, {"type": "object"}]
        },
        parallel_tool_calls=_null({"type": "boolean"}),
        text=_null({"type": "object"}),
        metadata=_null({"type": "object", "additionalProperties": _STR}),
        store=_null({"type": "boolean", "default": True}),
        background=_null({"type": "boolean", "default": False}),
        stream=_null({"type": "boolean", "default": False}),
        previous_response_id=_null(_STR),
        temperature=_null({"type": "number", "description": "Accepted and ignored."}),
        top_p=_null({"type": "number", "description": "Accepted and ignored."}),
        truncation=_null(
            {
                "type": "string",
                "enum": ["auto", "disabled"],
                "default": "disabled",
                "description": "auto: the oldest turns may be left out to fit the model's "
                "context window; disabled: a prompt that does not fit is a 400 "
                "context_length_exceeded.",
            }
        ),
    )
    return {
        "CreateResponse": create,
        "Response": response,
        "ResponsesStreamEvent": _obj(
            ["type", "sequence_number"],
            type=_STR,
            sequence_number=_INT,
            response=_ref("Response"),
        ),
        "ResponseItemList": _obj(
            ["object", "data", "first_id", "last_id", "has_more"],
            object={"type": "string", "enum": ["list"]},
            data={"type": "array", "items": _obj(["id", "type"], id=_STR, type=_STR)},
            first_id=_STR,
            last_id=_STR,
            has_more={"type": "boolean"},
        ),
        "ResponseDeleted": _obj(
            ["id", "object", "deleted"],
            id=_STR,
            object={"type": "string", "enum": ["response"]},
            deleted={"type": "boolean"},
        ),
        "ResponseInputTokens": _obj(
            ["object", "input_tokens"],
            object={"type": "string", "enum": ["response.input_tokens"]},
            input_tokens=_INT,
        ),
    }


def _answer(description: str, schema: str, stream: bool = False) -> dict[str, Any]:
    content = _json(_ref(schema))
    if stream:
        content["text/event-stream"] = {"schema": _SSE}
    return {"description": description, "content": content}


def paths() -> dict[str, Any]:
    body = {"required": True, "content": _json(_ref("CreateResponse"))}
    every = ("400", "401", "403", "404", "413", "415", "429", "500", "502", "503", "504")
    return {
        "/v1/responses": {
            "post": {
                "summary": "Create a response (streamed, stored, or in the background)",
                "requestBody": body,
                "responses": {
                    "200": _answer("The response, or its stream events.", "Response", True),
                    **_errors(*every),
                },
            }
        },
        "/v1/responses/{response_id}": {
            "get": {
                "summary": "A stored response (or its events, with stream=true)",
                "parameters": [
                    _ID_PARAM,
                    {
                        "name": "stream",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "boolean"},
                    },
                    {"name": "starting_after", "in": "query", "required": False, "schema": _INT},
                ],
                "responses": {
                    "200": _answer("The response.", "Response", True),
                    **_errors("400", "401", "404", "503"),
                },
            },
            "delete": {
                "summary": "Delete a stored response",
                "parameters": [_ID_PARAM],
                "responses": {
                    "200": _answer("Deleted.", "ResponseDeleted"),
                    **_errors("401", "404", "503"),
                },
            },
        },
        "/v1/responses/{response_id}/cancel": {
            "post": {
                "summary": "Cancel a background response",
                "parameters": [_ID_PARAM],
                "responses": {
                    "200": _answer("The response, cancelled.", "Response"),
                    **_errors("400", "401", "404", "503"),
                },
            }
        },
        "/v1/responses/{response_id}/input_items": {
            "get": {
                "summary": "The input items of a stored response",
                "parameters": [
                    _ID_PARAM,
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 100},
                    },
                    {
                        "name": "order",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "enum": ["asc", "desc"]},
                    },
                    {"name": "after", "in": "query", "required": False, "schema": _STR},
                ],
                "responses": {
                    "200": _answer("The items.", "ResponseItemList"),
                    **_errors("400", "401", "404", "503"),
                },
            }
        },
        "/v1/responses/input_tokens": {
            "post": {
                "summary": "Count a request's input tokens (the estimate usage reports)",
                "requestBody": body,
                "responses": {
                    "200": _answer("The count.", "ResponseInputTokens"),
                    **_errors("400", "401", "404", "413", "415", "503"),
                },
            }
        },
        "/v1/responses/compact": {
            "post": {
                "summary": "Not available: compact on the client (always a 400)",
                "requestBody": {"required": False, "content": _json({"type": "object"})},
                "responses": _errors("400", "401"),
            }
        },
    }
