"""The ``response`` object's fixed part, stored input items, and the SSE framing.

Every field the spec marks required is present (strictly generated clients break on a missing
one); fields the gateway accepts and does not forward are echoed as the client sent them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from gateway.http.sse import encode
from gateway.openai.responses.run import StreamEvent, new_id
from gateway.openai.responses.translate import Translated
from gateway.openai.responses.wire import CreateResponse


def response_object(
    request: CreateResponse,
    translated: Translated,
    model: str,
    response_id: str | None = None,
    status: str = "in_progress",
) -> dict[str, Any]:
    """A response with no output yet."""
    extra = request.model_extra or {}
    obj: dict[str, Any] = {
        "id": response_id or new_id("resp"),
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "background": request.background,
        "completed_at": None,
        "error": None,
        "incomplete_details": None,
        "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens,
        "max_tool_calls": extra.get("max_tool_calls"),
        "model": model,
        "output": [],
        "parallel_tool_calls": request.parallel_tool_calls is not False,
        "previous_response_id": request.previous_response_id,
        "prompt_cache_key": extra.get("prompt_cache_key"),
        "reasoning": None,
        "safety_identifier": extra.get("safety_identifier"),
        "service_tier": "default",
        "store": request.store,
        "temperature": request.temperature if request.temperature is not None else 1.0,
        "text": _text(request),
        "tool_choice": request.tool_choice if request.tool_choice is not None else "auto",
        "tools": [_tool(t) for t in translated.tools],
        "top_logprobs": 0,
        "top_p": request.top_p if request.top_p is not None else 1.0,
        "truncation": extra.get("truncation") if extra.get("truncation") == "auto" else "disabled",
        "metadata": dict(request.metadata or {}),
    }
    if isinstance(extra.get("user"), str):  # neither may be null in the spec: left out instead
        obj["user"] = extra["user"]
    return obj


def _text(request: CreateResponse) -> dict[str, Any]:
    fmt = (request.text or {}).get("format") or {"type": "text"}
    return {"format": fmt, "verbosity": "medium"}


def _function(tool: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "function",
        "name": tool.get("name"),
        "description": tool.get("description"),
        "parameters": tool.get("parameters"),
        "strict": tool.get("strict") is True,
    }


def _custom(tool: dict[str, Any]) -> dict[str, Any]:
    """A custom tool as sent: its optional ``description`` and ``format`` only when given."""
    echoed = {"type": "custom", "name": tool.get("name")}
    echoed.update({k: tool[k] for k in ("description", "format") if tool.get(k) is not None})
    return echoed


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    if tool.get("type") == "custom":
        return _custom(tool)
    if tool.get("type") == "namespace":
        inner = [
            _custom(t) if t.get("type") == "custom" else _function(t)
            for t in tool.get("tools") or []
            if t.get("type", "function") in ("function", "custom")
        ]
        return {
            "type": "namespace",
            "name": tool.get("name"),
            "description": tool.get("description") or "",
            "tools": inner,
        }
    return _function(tool)


_PREFIXES = {
    "function_call": "fc",
    "function_call_output": "fco",
    "custom_tool_call": "ctc",
    "custom_tool_call_output": "ctco",
}


def stored_items(items: Sequence[Any]) -> list[dict[str, Any]]:
    """Input items as ``input_items.list`` returns them: each with an id and a status."""
    result: list[dict[str, Any]] = []
    for item in items:
        kind = item.get("type", "message")
        if kind in ("reasoning", "item_reference"):
            continue
        stored = dict(item)
        stored["type"] = kind
        if kind == "message":
            stored["content"] = _parts(item.get("role"), item.get("content"))
            stored.setdefault("id", new_id("msg"))
        else:
            prefix = _PREFIXES.get(kind, "item")
            stored.setdefault("id", new_id(prefix))
        stored.setdefault("status", "completed")
        if stored.get("id") is None:
            stored["id"] = new_id("item")
        result.append(stored)
    return result


def _parts(role: Any, content: Any) -> list[dict[str, Any]]:
    kind = "output_text" if role == "assistant" else "input_text"
    if isinstance(content, str):
        content = [{"type": kind, "text": content}]
    parts = []
    for part in content or []:
        if part.get("type") in ("input_text", "output_text", "text"):
            part = {"type": kind, "text": part.get("text", "")}
            if kind == "output_text":
                part.update(annotations=[], logprobs=[])
        parts.append(part)
    return parts


def sse(event: StreamEvent) -> bytes:
    """One server-sent event, named like its type as OpenAI sends them."""
    return encode(event, str(event["type"]))
