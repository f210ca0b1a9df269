"""A Messages request -> the engine's neutral :class:`Conversation`, and nothing else.

``system`` becomes a system message, and so does each ``system`` entry of ``messages``, where
it came (the template decides how a system turn after the first reads); each user message's
``tool_result`` blocks become ``tool`` messages (in order, its text around them a user
message); an assistant message's ``tool_use`` blocks become its tool calls. ``thinking`` blocks
are dropped (the models here think in the open, if at all); images and documents are refused
with a 400 naming the block. A last assistant message with text is a prefill: the answer
continues it. Anthropic's server tools are not offered to the model and not refused: logged as
ignored.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from gateway.anthropic.protocol import (
    DROPPED_BLOCKS,
    IGNORED_FIELDS,
    Block,
    CountTokensRequest,
    CustomTool,
    InputMessage,
    MessagesRequest,
    OtherBlock,
    TextBlock,
    ToolChoiceAny,
    ToolChoiceNone,
    ToolChoiceTool,
    ToolResultBlock,
    ToolUseBlock,
)
from gateway.engine.conversation import (
    Conversation,
    Message,
    OutputFormat,
    ToolCall,
    ToolChoice,
    ToolDefinition,
)
from gateway.errors import BadRequest, UnsupportedParameter

logger = logging.getLogger("gateway.anthropic")


def _refuse(block: OtherBlock, where: str) -> UnsupportedParameter:
    if block.type in ("image", "document"):
        what = f"'{block.type}' blocks are not supported: the models here read text only"
    else:
        what = f"content blocks of type '{block.type}' are not supported"
    return UnsupportedParameter(f"{where}: {what}.", param=where, code="unsupported_content_type")


def _result_text(block: ToolResultBlock, where: str) -> str:
    content = block.content
    if isinstance(content, str):
        text = content
    else:
        parts: list[str] = []
        for j, part in enumerate(content):
            if not isinstance(part, TextBlock):
                assert isinstance(part, OtherBlock)
                raise _refuse(part, f"{where}.content[{j}]")
            parts.append(part.text)
        text = "\n".join(parts)
    return f"Error: {text}" if block.is_error else text


def _user(blocks: Sequence[Block], where: str) -> list[Message]:
    """Text as user messages, each ``tool_result`` a tool message, in the order sent."""
    out: list[Message] = []
    texts: list[str] = []

    def flush() -> None:
        if texts:
            out.append(Message("user", "\n".join(texts)))
            texts.clear()

    for j, block in enumerate(blocks):
        at = f"{where}.content[{j}]"
        if isinstance(block, TextBlock):
            texts.append(block.text)
        elif isinstance(block, ToolResultBlock):
            flush()
            out.append(Message("tool", _result_text(block, at), tool_call_id=block.tool_use_id))
        elif isinstance(block, ToolUseBlock):
            raise BadRequest(f"{at}: 'tool_use' blocks belong in assistant messages.", param=at)
        else:
            assert isinstance(block, OtherBlock)
            if block.type not in DROPPED_BLOCKS:
                raise _refuse(block, at)
    flush()
    return out


def _assistant(blocks: Sequence[Block], where: str) -> Message:
    texts: list[str] = []
    calls: list[ToolCall] = []
    for j, block in enumerate(blocks):
        at = f"{where}.content[{j}]"
        if isinstance(block, TextBlock):
            texts.append(block.text)
        elif isinstance(block, ToolUseBlock):
            arguments = json.dumps(block.input, ensure_ascii=False)
            calls.append(ToolCall(block.id, block.name, arguments))
        elif isinstance(block, ToolResultBlock):
            raise BadRequest(f"{at}: 'tool_result' blocks belong in user messages.", param=at)
        else:
            assert isinstance(block, OtherBlock)
            if block.type not in DROPPED_BLOCKS:
                raise _refuse(block, at)
    return Message("assistant", "".join(texts), tool_calls=tuple(calls))


def _messages(request: CountTokensRequest) -> list[Message]:
    out: list[Message] = []
    system = request.system
    if isinstance(system, str) and system:
        out.append(Message("system", system))
    elif isinstance(system, list) and system:
        out.append(Message("system", "\n\n".join(block.text for block in system)))
    for i, message in enumerate(request.messages):
        out.extend(_message(message, f"messages[{i}]"))
    return out


def _system(blocks: Sequence[Block], where: str) -> str:
    """A ``system`` turn's text blocks, joined as the top-level ``system`` is; text only."""
    texts: list[str] = []
    for j, block in enumerate(blocks):
        if not isinstance(block, TextBlock):
            at = f"{where}.content[{j}]"
            raise BadRequest(f"{at}: system messages hold text blocks only.", param=at)
        texts.append(block.text)
    return "\n\n".join(texts)


def _message(message: InputMessage, where: str) -> list[Message]:
    content = message.content
    if message.role == "system":
        text = content if isinstance(content, str) else _system(content, where)
        return [Message("system", text)] if text else []
    if isinstance(content, str):
        return [Message(message.role, content)]
    if message.role == "user":
        return _user(content, where)
    return [_assistant(content, where)]


def _prefilled(messages: Sequence[Message]) -> bool:
    """The request ends with the start of the answer: an assistant's text and no calls."""
    last = messages[-1] if messages else None
    return (
        last is not None
        and last.role == "assistant"
        and bool(last.text.strip())
        and (not last.tool_calls)
    )


def _tools(request: CountTokensRequest, ignored: list[str]) -> list[ToolDefinition]:
    tools: list[ToolDefinition] = []
    for i, tool in enumerate(request.tools or ()):
        if isinstance(tool, CustomTool):
            definition = ToolDefinition(
                tool.name,
                tool.description,
                tool.input_schema,
                strict=bool(tool.strict),
                param=f"tools[{i}].input_schema",
            )
            tools.append(definition)
        else:
            ignored.append(f"tools[{i}] ({tool.type})")
    if ignored:
        logger.debug("server tools not offered to the model: %s", ", ".join(ignored))
    return tools


def _tool_choice(request: CountTokensRequest) -> tuple[ToolChoice | None, bool]:
    """The engine's tool choice, and whether parallel calls are allowed."""
    choice = request.tool_choice
    if choice is None:
        return None, True
    if isinstance(choice, ToolChoiceNone):
        return ToolChoice("none"), True
    parallel = not choice.disable_parallel_tool_use
    if isinstance(choice, ToolChoiceTool):
        return ToolChoice("required", forced=choice.name, param="tool_choice.name"), parallel
    if isinstance(choice, ToolChoiceAny):
        return ToolChoice("required"), parallel
    return ToolChoice("auto"), parallel


def _output_format(request: CountTokensRequest) -> OutputFormat | None:
    """Structured outputs (``output_config.format``, or the beta's ``output_format``)."""
    config = request.output_config
    if config is not None and config.format is not None:
        fmt, param = config.format, "output_config.format"
    elif request.output_format is not None:
        fmt, param = request.output_format, "output_format"
    else:
        return None
    return OutputFormat("json_schema", name="output", schema=fmt.schema_, strict=True, param=param)


def _ignored(request: CountTokensRequest) -> list[str]:
    extra = set(request.model_extra or {})
    ignored = set(IGNORED_FIELDS & request.model_fields_set) | extra
    config = request.output_config
    if config is not None:  # what it says besides the format (effort, ...) is not forwarded
        ignored |= {f"output_config.{name}" for name in config.model_extra or {}}
    return sorted(ignored)


def conversation(request: CountTokensRequest) -> Conversation:
    """The engine's conversation for a Messages (or count_tokens) request."""
    ignored = _ignored(request)
    server_tools: list[str] = []
    tools = _tools(request, server_tools)
    if not tools and request.tools and request.tool_choice is not None:
        # Only server tools: with nothing left to offer, the choice has nothing to say.
        choice, parallel = None, True
    else:
        choice, parallel = _tool_choice(request)
    stops: list[str] = []
    max_tokens: int | None = None
    stream = False
    if isinstance(request, MessagesRequest):
        if request.max_tokens == 0:
            raise UnsupportedParameter(
                "max_tokens: 0 (warm the prompt cache without generating a response) is not "
                "available here: the upstream service has no prompt cache to warm, so the "
                "call would do nothing. Send max_tokens of 1 or more.",
                param="max_tokens",
            )
        stops = [s for s in request.stop_sequences or () if s]
        max_tokens, stream = request.max_tokens, request.stream
    messages = _messages(request)
    output_format = _output_format(request)
    return Conversation(
        model=request.model,
        messages=messages,
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=parallel,
        output_format=output_format,
        stops=stops,
        max_tokens=max_tokens,
        max_tokens_param="max_tokens",
        clamp_max_tokens=True,
        stream=stream,
        # A structured answer is read whole, so a prefill is not continued into it.
        continue_final=_prefilled(messages) and output_format is None,
        ignored=ignored + server_tools,
    )
