"""OpenAI chat and completion requests -> the engine's neutral request.

What OpenAI's wire format allows and the service cannot honour is refused here, by the door,
in OpenAI's terms; the engine then sees only a :class:`~gateway.engine.conversation.Conversation`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from gateway.config import LimitSettings
from gateway.engine.catalog import ModelCatalog
from gateway.engine.conversation import (
    CUSTOM_INPUT,
    Conversation,
    Message,
    OutputFormat,
    Role,
    ToolCall,
    ToolChoice,
    ToolDefinition,
)
from gateway.engine.planning import Plan, TextPrompts, plan_conversation, plan_prompts
from gateway.errors import BadRequest, UnsupportedParameter
from gateway.openai.protocol import (
    IGNORED_FIELDS,
    AllowedToolsChoice,
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    CustomToolDefinition,
    NamedToolChoice,
)
from gateway.openai.protocol import ToolCall as WireCall

_ROLES: dict[str, Role] = {
    "developer": "system",
    "function": "tool",
    "system": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
}

#: ``max_tokens`` of a text completion that sets none (and whose model sets no ``max_tokens``):
#: the spec's default, as OpenAI and vLLM apply it (a legacy completion continues a document).
COMPLETIONS_MAX_TOKENS = 16

#: Fields whose absence would change what the answer means: refused rather than ignored.
_MEANINGFUL_EXTRAS = ("web_search_options", "moderation")


def _message_text(message: ChatMessage, index: int) -> str:
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for j, part in enumerate(content):
        text = getattr(part, "text", None)
        if part.type == "refusal" and message.role == "assistant":  # an earlier refusal: text
            text = (part.model_extra or {}).get("refusal")
            if isinstance(text, str):
                parts.append(text)
                continue
        if part.type not in ("text", "input_text") or not isinstance(text, str):
            raise UnsupportedParameter(
                f"Only text content is supported by this service; messages[{index}].content[{j}] "
                f"has type '{part.type}'.",
                param=f"messages[{index}].content[{j}]",
                code="unsupported_content_type",
            )
        parts.append(text)
    return "".join(parts)


def _call(call: WireCall) -> ToolCall:
    """A custom tool's call in the history is written back as a call with ``input``, so a
    conversation that holds one can still be continued."""
    if call.custom is not None and call.type == "custom":
        return ToolCall(call.id, call.custom.name, json.dumps({"input": call.custom.input}))
    assert call.function is not None
    return ToolCall(call.id, call.function.name, call.function.arguments)


def chat_messages(messages: Sequence[ChatMessage]) -> list[Message]:
    return [
        Message(
            role=_ROLES[message.role],
            text=_message_text(message, i),
            name=message.name,
            tool_calls=tuple(_call(call) for call in message.tool_calls or ()),
            tool_call_id=message.tool_call_id,
        )
        for i, message in enumerate(messages)
    ]


def _refuse_unsupported(request: ChatCompletionRequest) -> None:
    for name in ("logprobs", "top_logprobs"):
        if getattr(request, name):
            raise UnsupportedParameter(
                "logprobs are not available: the upstream service reports no token probabilities.",
                param=name,
            )
    for name in _MEANINGFUL_EXTRAS:
        if (request.model_extra or {}).get(name) is not None:
            raise UnsupportedParameter(
                f"'{name}' is not supported: the upstream service only generates text.",
                param=name,
            )
    if request.audio is not None or (request.modalities and "audio" in request.modalities):
        raise UnsupportedParameter("Audio output is not supported.", param="audio")
    if request.functions:
        raise UnsupportedParameter(
            "The deprecated 'functions' are not supported; use 'tools' and 'tool_choice'.",
            param="functions",
        )


def _tools(request: ChatCompletionRequest, ignored: list[str]) -> list[ToolDefinition]:
    """Function tools as defined; a custom (free-text) tool as one taking its input as text.

    A custom tool's ``format`` (a grammar) cannot constrain the model here: logged as ignored.
    """
    tools = []
    for i, tool in enumerate(request.tools or ()):
        if isinstance(tool, CustomToolDefinition):
            tools.append(custom_tool(tool.custom, f"tools[{i}].custom", ignored))
        else:
            function = tool.function
            tools.append(
                ToolDefinition(
                    function.name,
                    function.description,
                    function.parameters,
                    bool(function.strict),
                    param=f"tools[{i}].function.parameters",
                )
            )
    return tools


def custom_tool(spec: Mapping[str, Any], where: str, ignored: list[str]) -> ToolDefinition:
    """A custom (free-text) tool as one taking its input as the string ``input``; chat's
    ``tools[].custom`` and the Responses API's flat ``tools[]`` both come this way.

    Its ``format`` (a grammar) cannot constrain the model here: logged as ignored.
    """
    name, description = spec.get("name"), spec.get("description")
    if not isinstance(name, str) or not 1 <= len(name) <= 64:
        raise BadRequest("A custom tool needs a name of 1 to 64 characters.", param=f"{where}.name")
    fmt = spec.get("format")
    if isinstance(fmt, dict) and fmt.get("type") not in (None, "text"):
        ignored.append(f"{where}.format ({fmt.get('type')})")
    return ToolDefinition(
        name,
        description if isinstance(description, str) else None,
        CUSTOM_INPUT,
        param=where,
        custom=True,
    )


def _named(choice: dict[str, Any] | None) -> str:
    name = (choice or {}).get("name")
    return name if isinstance(name, str) else repr(name)


def _tool_choice(request: ChatCompletionRequest) -> ToolChoice | None:
    choice = request.tool_choice
    if choice is None:
        return None
    if isinstance(choice, AllowedToolsChoice):
        return _allowed(choice)
    if isinstance(choice, NamedToolChoice):
        named = choice.custom if choice.type == "custom" else choice.function
        return ToolChoice("auto", forced=_named(named))
    return ToolChoice(choice)


def _allowed(choice: AllowedToolsChoice) -> ToolChoice:
    spec = choice.allowed_tools
    mode = spec.get("mode", "auto")
    tools = spec.get("tools")
    if mode not in ("auto", "required") or not isinstance(tools, list):
        raise BadRequest(
            "tool_choice.allowed_tools needs mode 'auto' or 'required' and a list of tools.",
            param="tool_choice.allowed_tools",
        )
    names = []
    for tool in tools:
        kind = tool.get("type", "function") if isinstance(tool, dict) else None
        function = tool.get(kind) if isinstance(tool, dict) and isinstance(kind, str) else None
        name = function.get("name") if isinstance(function, dict) else None
        if kind not in ("function", "custom") or not isinstance(name, str):
            raise BadRequest(
                "Each allowed tool must be {'type': 'function', 'function': {'name': ...}} "
                "or {'type': 'custom', 'custom': {'name': ...}}.",
                param="tool_choice.allowed_tools.tools",
            )
        names.append(name)
    return ToolChoice(mode, allowed=tuple(names), param="tool_choice.allowed_tools")


def _output_format(request: ChatCompletionRequest) -> OutputFormat | None:
    fmt = request.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return OutputFormat("json_object")
    spec = fmt.json_schema
    if spec is None:
        return OutputFormat("json_schema", param="response_format.json_schema")
    if spec.schema_ is None:  # the spec makes the schema optional: then any JSON object will do
        return OutputFormat("json_object", spec.name, spec.description)
    return OutputFormat(
        "json_schema",
        spec.name,
        spec.description,
        spec.schema_,
        bool(spec.strict),
        param="response_format.json_schema",
    )


def _ignored(request: ChatCompletionRequest | CompletionRequest) -> list[str]:
    extra = set(request.model_extra or {})
    return sorted((IGNORED_FIELDS & request.model_fields_set) | extra)


def chat_conversation(request: ChatCompletionRequest) -> Conversation:
    """The chat request as the engine's conversation; what it cannot honour is refused."""
    _refuse_unsupported(request)
    ignored = _ignored(request)
    return Conversation(
        model=request.model,
        messages=chat_messages(request.messages),
        tools=_tools(request, ignored),
        tool_choice=_tool_choice(request),
        parallel_tool_calls=request.parallel_tool_calls is not False,
        output_format=_output_format(request),
        stops=request.stop_list(),
        max_tokens=request.max_completion_tokens or request.max_tokens,
        max_tokens_param="max_completion_tokens" if request.max_completion_tokens else "max_tokens",
        n=request.n,
        stream=request.stream,
        include_usage=bool(request.stream_options and request.stream_options.include_usage),
        ignored=ignored,
    )


def plan_chat(
    request: ChatCompletionRequest,
    catalog: ModelCatalog,
    limits: LimitSettings,
    client_timeout: float | None = None,
) -> Plan:
    catalog.resolve(request.model)  # an unknown model is a 404 before anything else
    return plan_conversation(chat_conversation(request), catalog, limits, client_timeout)


def plan_text(
    request: CompletionRequest,
    catalog: ModelCatalog,
    limits: LimitSettings,
    client_timeout: float | None = None,
) -> Plan:
    model = catalog.resolve(request.model)
    if request.logprobs is not None:
        raise UnsupportedParameter(
            "logprobs are not available: the upstream service reports no token probabilities.",
            param="logprobs",
        )
    raw = request.prompt
    if isinstance(raw, str):
        prompts = [raw]
    elif all(isinstance(p, str) for p in raw):
        prompts = [str(p) for p in raw]
    else:
        raise UnsupportedParameter(
            "Token-id prompts are not supported: send the prompt as text.", param="prompt"
        )
    text = TextPrompts(
        model=request.model,
        prompts=prompts,
        stops=request.stop_list(),
        max_tokens=(
            request.max_tokens
            if request.max_tokens is not None
            else model.max_tokens or COMPLETIONS_MAX_TOKENS
        ),
        n=request.n,
        stream=request.stream,
        include_usage=bool(request.stream_options and request.stream_options.include_usage),
        echo=request.echo,
        ignored=_ignored(request),
    )
    return plan_prompts(text, catalog, limits, client_timeout)
