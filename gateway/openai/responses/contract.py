"""Stand-in for ``gateway.engine.conversation`` until the layout lands (then deleted).

The dataclasses follow the engine contract field for field, so the translation written against
them moves over unchanged; :func:`plan` reaches today's chat planner through its wire model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.catalog import ModelCatalog
from gateway.config import LimitSettings
from gateway.planning import Plan, plan_chat
from gateway.protocol import ChatCompletionRequest

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    text: str = ""
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None


@dataclass(frozen=True, slots=True)
class ToolDefinition:
    name: str
    description: str | None
    parameters: Mapping[str, Any] | None
    strict: bool = False
    param: str = "tools"


@dataclass(frozen=True, slots=True)
class ToolChoice:
    mode: Literal["auto", "required", "none"] = "auto"
    forced: str | None = None
    allowed: tuple[str, ...] | None = None
    param: str = "tool_choice"


@dataclass(frozen=True, slots=True)
class OutputFormat:
    kind: Literal["json_object", "json_schema"]
    name: str | None = None
    description: str | None = None
    schema: Mapping[str, Any] | None = None
    strict: bool = False
    param: str = "response_format"


@dataclass(slots=True)
class Conversation:
    model: str
    messages: list[Message]
    tools: list[ToolDefinition] = field(default_factory=list)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool = True
    output_format: OutputFormat | None = None
    stops: list[str] = field(default_factory=list)
    max_tokens: int | None = None
    max_tokens_param: str = "max_tokens"
    clamp_max_tokens: bool = False
    n: int = 1
    stream: bool = False
    include_usage: bool = False
    ignored: list[str] = field(default_factory=list)


def _chat_body(conversation: Conversation) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    for m in conversation.messages:
        entry: dict[str, Any] = {"role": m.role, "content": m.text}
        if m.name is not None:
            entry["name"] = m.name
        if m.tool_calls:
            entry["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in m.tool_calls
            ]
        if m.tool_call_id is not None:
            entry["tool_call_id"] = m.tool_call_id
        messages.append(entry)
    body: dict[str, Any] = {
        "model": conversation.model,
        "messages": messages,
        "stream": conversation.stream,
        "parallel_tool_calls": conversation.parallel_tool_calls,
    }
    if conversation.max_tokens is not None:
        body["max_tokens"] = conversation.max_tokens
    allowed = conversation.tool_choice.allowed if conversation.tool_choice else None
    tools = [t for t in conversation.tools if allowed is None or t.name in allowed]
    if tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": dict(t.parameters) if t.parameters is not None else None,
                    "strict": t.strict,
                },
            }
            for t in tools
        ]
    choice = conversation.tool_choice
    if choice is not None and (tools or choice.mode == "none"):
        if choice.forced is not None:
            body["tool_choice"] = {"type": "function", "function": {"name": choice.forced}}
        else:
            body["tool_choice"] = choice.mode
    fmt = conversation.output_format
    if fmt is not None:
        if fmt.kind == "json_object":
            body["response_format"] = {"type": "json_object"}
        else:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": fmt.name or "response",
                    "description": fmt.description,
                    "schema": dict(fmt.schema) if fmt.schema is not None else None,
                    "strict": fmt.strict,
                },
            }
    return body


def plan(
    conversation: Conversation,
    catalog: ModelCatalog,
    limits: LimitSettings,
    client_timeout: float | None = None,
) -> Plan:
    """The conversation planned by today's chat planner (``plan_conversation`` later)."""
    request = ChatCompletionRequest.model_validate(_chat_body(conversation))
    result = plan_chat(request, catalog, limits, client_timeout)
    result.ignored = list(conversation.ignored)
    return result
