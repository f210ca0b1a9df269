"""A Responses API request -> the engine's neutral :class:`Conversation`.

Input items arrive as the Agents SDK, the AI SDK and Codex send them: messages with or without
``type``, content as a string or parts, an agent's whole history of ``function_call`` /
``function_call_output`` items (with or without ``id``/``status``), ``reasoning`` items (dropped:
the models write none), ``item_reference`` (resolved from the store beforehand). Tools the
upstream cannot run (hosted tools) are not offered to the model and are reported as ignored,
so such clients' requests work as sent; custom (free-text) tools are offered as chat offers them
(:func:`gateway.openai.translate.custom_tool`). Bad input is a 400 naming the item.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.engine.conversation import (
    Conversation,
    Message,
    OutputFormat,
    ToolCall,
    ToolChoice,
    ToolDefinition,
)
from gateway.errors import BadRequest, UnsupportedParameter
from gateway.openai.responses.wire import CreateResponse
from gateway.openai.translate import custom_tool

#: Tools OpenAI runs on its side: not offered to the model, not refused (logged as ignored).
HOSTED_TOOLS = frozenset(
    {
        "web_search",
        "web_search_preview",
        "web_search_2025_08_26",
        "web_search_preview_2025_03_11",
        "file_search",
        "code_interpreter",
        "computer_use_preview",
        "computer",
        "image_generation",
        "mcp",
        "local_shell",
        "shell",
        "apply_patch",
        "tool_search",
        "programmatic_tool_calling",
    }
)
#: History items of hosted tools: what they did is not text the model can continue from.
_HOSTED_ITEMS = frozenset(
    {
        "web_search_call",
        "file_search_call",
        "code_interpreter_call",
        "computer_call",
        "computer_call_output",
        "image_generation_call",
        "mcp_call",
        "mcp_list_tools",
        "mcp_approval_request",
        "mcp_approval_response",
        "local_shell_call",
        "local_shell_call_output",
        "shell_call",
        "shell_call_output",
        "apply_patch_call",
        "apply_patch_call_output",
        "tool_search_call",
        "tool_search_output",
        "compaction",
        "compaction_trigger",  # asks OpenAI to compact; the gateway fits prompts itself
        "program",
        "program_output",
    }
)
_TEXT_PARTS = frozenset({"input_text", "output_text", "text", "summary_text", "refusal"})
_ROLES: Mapping[str, Literal["system", "user", "assistant"]] = {
    "user": "user",
    "assistant": "assistant",
    "system": "system",
    "developer": "system",
}
#: Request fields accepted and not forwarded (the jobs API takes a prompt and nothing else).
IGNORED_FIELDS = (
    "temperature",
    "top_p",
    "user",
    "include",
    "prompt_cache_key",
    "prompt_cache_retention",
    "prompt_cache_options",
    "reasoning",
    "service_tier",
    "safety_identifier",
    "max_tool_calls",
    "stream_options",
    "context_management",
    "moderation",
)


@dataclass(slots=True)
class Translated:
    """The conversation, and what the response object echoes back about the request."""

    conversation: Conversation
    tools: list[dict[str, Any]] = field(default_factory=list)  # offered, as the client wrote
    namespaces: dict[str, str] = field(default_factory=dict)  # function name -> namespace


def input_items(request: CreateResponse) -> list[dict[str, Any]]:
    """``input`` as a list of items (a string is one user message)."""
    raw = request.input
    if raw is None:
        return []
    if isinstance(raw, str):
        return [{"type": "message", "role": "user", "content": raw}]
    return list(raw)


def references(items: Sequence[Any]) -> list[str]:
    """The ids of the ``item_reference`` items, to load from the store before translating."""
    return [str(item["id"]) for item in items if _kind(item) == "item_reference"]


def _kind(item: Any) -> str | None:
    """An item's type; the spec lets a message (with ``role``) and an ``item_reference``
    (with only ``id``) leave it out."""
    if not isinstance(item, dict):
        return None
    kind = item.get("type")
    if kind is None and "role" in item:
        return "message"
    if kind is None and set(item) == {"id"}:
        return "item_reference"
    return kind if isinstance(kind, str) else None


def translate(
    request: CreateResponse,
    history: Sequence[dict[str, Any]],
    items: Sequence[Any],
    resolved: Mapping[str, dict[str, Any]],
) -> Translated:
    """``history``: the items of the ``previous_response_id`` chain; ``items``: this input."""
    _refuse(request)
    messages: list[Message] = []
    if request.instructions is not None:
        messages.extend(_instructions(request.instructions))
    _History(messages, resolved).add_all(history, "previous_response_id")
    _History(messages, resolved).add_all(items, "input")
    if not any(m.role != "system" for m in messages):
        raise BadRequest("input must hold at least one message or item.", param="input")
    tools, offered, namespaces, ignored = _tools(request.tools or [])
    added = [t for i in (*history, *items) if _kind(i) == "additional_tools" for t in _added(i)]
    if added:  # tools made available later in the conversation are offered with the others
        more, _, more_namespaces, more_ignored = _tools(added, "additional_tools")
        tools, ignored = [*tools, *more], [*ignored, *more_ignored]
        namespaces.update(more_namespaces)
        _unique(tools)
    conversation = Conversation(
        model=request.model,
        messages=messages,
        tools=tools,
        tool_choice=_tool_choice(request.tool_choice, tools),
        parallel_tool_calls=request.parallel_tool_calls is not False,
        output_format=_format(request.text),
        max_tokens=request.max_output_tokens,
        max_tokens_param="max_output_tokens",
        stream=request.stream,
        ignored=sorted({*_ignored(request), *ignored}),
        truncation=(request.model_extra or {}).get("truncation") == "auto",
        messages_param="input",
    )
    return Translated(conversation, offered, namespaces)


def _refuse(request: CreateResponse) -> None:
    extra = request.model_extra or {}
    if extra.get("truncation") not in (None, "auto", "disabled"):
        raise BadRequest("truncation must be 'auto' or 'disabled'.", param="truncation")
    if extra.get("conversation") is not None:
        raise UnsupportedParameter(
            "The Conversations API is not available here; chain responses with "
            "previous_response_id or send the history as input.",
            param="conversation",
        )
    if extra.get("prompt") is not None:
        raise UnsupportedParameter(
            "Reusable prompt templates are not available here; send the prompt as input.",
            param="prompt",
        )
    if extra.get("top_logprobs"):
        raise UnsupportedParameter(
            "logprobs are not available: the upstream service reports no token probabilities.",
            param="top_logprobs",
        )
    include = extra.get("include") or []
    if isinstance(include, list) and "message.output_text.logprobs" in include:
        raise UnsupportedParameter(
            "logprobs are not available: the upstream service reports no token probabilities.",
            param="include",
        )


def _ignored(request: CreateResponse) -> list[str]:
    extra = request.model_extra
    names = [n for n in IGNORED_FIELDS if extra.get(n) is not None] if extra else []
    typed = ("metadata", "store", "temperature", "top_p")
    return names + [n for n in typed if n in request.model_fields_set]


def _instructions(value: str | list[Any]) -> list[Message]:
    if isinstance(value, str):
        return [Message("system", value)] if value else []
    texts = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise BadRequest(
                "Each instructions item must be an object.", param=f"instructions[{i}]"
            )
        texts.append(_content_text(item.get("content"), f"instructions[{i}]"))
    return [Message("system", "\n\n".join(texts))]


def _content_text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadRequest(f"{where}.content must be a string or a list of parts.", param=where)
    texts: list[str] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        text = part.get("text") if isinstance(part, dict) else None
        if isinstance(kind, str) and kind in _TEXT_PARTS and isinstance(part, dict):
            value = text if kind != "refusal" else part.get("refusal", text)
            if not isinstance(value, str):
                raise BadRequest(
                    f"{where}.content[{j}] has no text.", param=f"{where}.content[{j}]"
                )
            texts.append(value)
            continue
        raise UnsupportedParameter(
            f"Only text content is supported by this service; {where}.content[{j}] has type "
            f"'{kind}'.",
            param=f"{where}.content[{j}]",
            code="unsupported_content_type",
        )
    return "".join(texts)


class _History:
    """Items -> messages; consecutive calls join the assistant message right before them."""

    def __init__(self, messages: list[Message], resolved: Mapping[str, dict[str, Any]]) -> None:
        self.messages = messages
        self.resolved = resolved
        self.names: dict[str, str] = {}
        for m in messages:
            for call in m.tool_calls:
                self.names[call.id] = call.name

    def add_all(self, items: Sequence[Any], param: str) -> None:
        for i, item in enumerate(items):
            self.add(item, f"{param}[{i}]")

    def add(self, item: Any, where: str, *, referenced: bool = False) -> None:
        if not isinstance(item, dict):
            raise BadRequest(f"{where} must be an object.", param=where)
        if item.get("type") is not None and not isinstance(item["type"], str):
            raise BadRequest(f"{where}.type must be a string.", param=f"{where}.type")
        kind = _kind(item)
        if kind == "message":
            self._message(item, where)
        elif kind in ("function_call", "custom_tool_call"):
            self._call(item, where, kind)
        elif kind in ("function_call_output", "custom_tool_call_output"):
            self._output(item, where)
        elif kind == "item_reference" and not referenced:
            target = self.resolved.get(str(item.get("id")))
            if target is None:
                raise BadRequest(
                    f"{where} refers to item {item.get('id')!r}, which is not stored.", param=where
                )
            self.add(target, where, referenced=True)
        elif kind == "reasoning" or kind in _HOSTED_ITEMS or kind == "additional_tools":
            return  # an additional_tools item's tools are offered by translate()
        else:
            raise BadRequest(f"{where} has an unsupported type {kind!r}.", param=where)

    def _message(self, item: dict[str, Any], where: str) -> None:
        role = _ROLES.get(str(item.get("role")))
        if role is None:
            raise BadRequest(
                f"{where}.role must be one of user, assistant, system, developer.",
                param=f"{where}.role",
            )
        self.messages.append(Message(role, _content_text(item.get("content"), where)))

    def _call(self, item: dict[str, Any], where: str, kind: str) -> None:
        call_id, name = item.get("call_id"), item.get("name")
        if not isinstance(call_id, str) or not isinstance(name, str):
            raise BadRequest(f"{where} needs call_id and name.", param=where)
        if kind == "custom_tool_call":
            arguments = json.dumps({"input": str(item.get("input", ""))})
        else:
            arguments = item.get("arguments", "")
            if not isinstance(arguments, str):
                raise BadRequest(f"{where}.arguments must be a string.", param=f"{where}.arguments")
        call = ToolCall(call_id, name, arguments)
        self.names[call_id] = name
        last = self.messages[-1] if self.messages else None
        if last is not None and last.role == "assistant":
            self.messages[-1] = Message(
                "assistant", last.text, last.name, (*last.tool_calls, call), last.tool_call_id
            )
        else:
            self.messages.append(Message("assistant", "", tool_calls=(call,)))

    def _output(self, item: dict[str, Any], where: str) -> None:
        call_id = item.get("call_id")  # optional in the spec: then it answers no known call
        if call_id is not None and not isinstance(call_id, str):
            raise BadRequest(f"{where}.call_id must be a string.", param=f"{where}.call_id")
        output = item.get("output", "")
        text = output if isinstance(output, str) else _content_text(output, where + ".output")
        name = self.names.get(call_id) if call_id is not None else None
        self.messages.append(Message("tool", text, name=name, tool_call_id=call_id))


def _function(tool: dict[str, Any], where: str) -> ToolDefinition:
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest(f"{where}.name is required.", param=f"{where}.name")
    parameters = tool.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise BadRequest(f"{where}.parameters must be an object.", param=f"{where}.parameters")
    description = tool.get("description")
    return ToolDefinition(
        name=name,
        description=description if isinstance(description, str) else None,
        parameters=parameters,
        strict=tool.get("strict") is True,
        param=where,
    )


def _definition(tool: dict[str, Any], where: str, ignored: list[str]) -> ToolDefinition:
    if tool.get("type", "function") == "custom":
        return custom_tool(tool, where, ignored)
    return _function(tool, where)


def _added(item: dict[str, Any]) -> list[Any]:
    tools = item.get("tools")
    return list(tools) if isinstance(tools, list) else []


def _unique(definitions: Sequence[ToolDefinition]) -> None:
    names = [d.name for d in definitions]
    if len(set(names)) != len(names):
        raise BadRequest("Tool names must be unique.", param="tools")


def _tools(
    tools: Sequence[Any], param: str = "tools"
) -> tuple[list[ToolDefinition], list[dict[str, Any]], dict[str, str], list[str]]:
    definitions: list[ToolDefinition] = []
    offered: list[dict[str, Any]] = []
    namespaces: dict[str, str] = {}
    ignored: list[str] = []
    for i, tool in enumerate(tools):
        where = f"{param}[{i}]"
        kind = tool.get("type") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or not isinstance(kind, str):
            raise BadRequest(f"{where} must be an object with a type.", param=where)
        if kind in ("function", "custom"):
            definitions.append(_definition(tool, where, ignored))
            offered.append(tool)
        elif kind == "namespace":
            for j, inner in enumerate(tool.get("tools") or []):
                inner_kind = inner.get("type", "function") if isinstance(inner, dict) else None
                if isinstance(inner, dict) and inner_kind in ("function", "custom"):
                    definition = _definition(inner, f"{where}.tools[{j}]", ignored)
                    definitions.append(definition)
                    namespaces[definition.name] = str(tool.get("name", ""))
                else:
                    ignored.append(f"{where}.tools[{j}]")
            offered.append(tool)
        else:  # hosted tools: the upstream cannot run them
            ignored.append(f"{where} ({kind})")
    _unique(definitions)
    return definitions, offered, namespaces, ignored


def _tool_choice(choice: Any, tools: Sequence[ToolDefinition]) -> ToolChoice | None:
    names = {t.name for t in tools}
    if choice is None:
        return None
    if choice in ("auto", "none", "required"):
        if choice == "required" and not tools:
            raise BadRequest("tool_choice 'required' needs function tools.", param="tool_choice")
        return ToolChoice(mode=choice)
    if not isinstance(choice, dict):
        raise BadRequest("tool_choice must be a string or an object.", param="tool_choice")
    kind = choice.get("type")
    if kind in ("function", "custom"):
        name = choice.get("name")
        if name not in names:
            raise BadRequest(
                f"tool_choice names the {kind} tool {name!r}, which is not among the tools.",
                param="tool_choice",
            )
        return ToolChoice(mode="required", forced=str(name))
    if kind == "allowed_tools":
        mode = choice.get("mode", "auto")
        if mode not in ("auto", "required"):
            raise BadRequest("tool_choice.mode must be auto or required.", param="tool_choice.mode")
        allowed = tuple(
            str(t.get("name"))
            for t in choice.get("tools") or []
            if isinstance(t, dict)
            and t.get("type") in ("function", "custom")
            and t.get("name") in names
        )
        if mode == "required" and not allowed:
            raise BadRequest(
                "tool_choice.tools names none of the function tools.", param="tool_choice.tools"
            )
        return ToolChoice(mode=mode, allowed=allowed)
    raise UnsupportedParameter(
        f"tool_choice of type {kind!r} cannot be honoured: only function and custom tools "
        "run here.",
        param="tool_choice",
    )


def _format(text: Any) -> OutputFormat | None:
    fmt = text.get("format") if isinstance(text, dict) else None
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise BadRequest("text.format must be an object.", param="text.format")
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return OutputFormat("json_object", param="text.format")
    if kind == "json_schema":
        schema = fmt.get("schema")
        if not isinstance(schema, dict):
            raise BadRequest(
                "text.format of type json_schema needs a schema.", param="text.format.schema"
            )
        return OutputFormat(
            "json_schema",
            name=fmt.get("name") if isinstance(fmt.get("name"), str) else None,
            description=fmt.get("description") if isinstance(fmt.get("description"), str) else None,
            schema=schema,
            strict=fmt.get("strict") is True,
            param="text.format",
        )
    raise BadRequest(
        "text.format.type must be text, json_object or json_schema.", param="text.format.type"
    )
