"""An Ollama request -> the engine's neutral :class:`Conversation`, and nothing else.

``/api/chat``: messages in order (``images`` refused: the models here read text only), an
assistant's ``tool_calls`` (arguments as objects) and ``tool`` messages answering them,
``tools``, ``format`` (``"json"`` or a JSON schema). ``/api/generate``: ``system`` and
``prompt`` rendered with the model's own template, after the turns ``context`` carries
(:mod:`gateway.ollama.context`); ``raw`` sends the prompt as it is; ``suffix`` (fill in the
middle) and ``template`` (the gateway renders prompts itself) are refused.

``options.num_predict`` is the token cap (negative: none) and ``options.stop`` the stop
sequences; the other options, ``keep_alive`` and ``think`` are accepted and reported as
ignored, as the other doors report theirs.
"""

from __future__ import annotations

import json
from typing import Any

from gateway.engine.conversation import (
    Conversation,
    Message,
    OutputFormat,
    ToolCall,
    ToolDefinition,
)
from gateway.engine.planning import TextPrompts
from gateway.errors import BadRequest, UnsupportedParameter
from gateway.ollama.context import decode_context
from gateway.ollama.protocol import (
    IGNORED_FIELDS,
    ChatMessage,
    ChatRequest,
    CompletionRequest,
    FunctionCall,
    GenerateRequest,
)

#: The options read; every other one is reported as ignored.
READ_OPTIONS = frozenset({"num_predict", "stop"})


def _images(images: list[Any] | None, where: str) -> None:
    if images:
        raise UnsupportedParameter(
            f"{where}: images are not supported: the models here read text only.",
            param=where,
            code="unsupported_content_type",
        )


def _options(request: CompletionRequest) -> tuple[int | None, list[str], list[str]]:
    """(the token cap, the stop sequences, the options ignored)."""
    options = request.options or {}
    cap = options.get("num_predict")
    if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool)):
        raise BadRequest("options.num_predict must be an integer.", param="options.num_predict")
    stop = options.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and (
        not isinstance(stop, list) or not all(isinstance(s, str) for s in stop)
    ):
        raise BadRequest("options.stop must be a list of strings.", param="options.stop")
    ignored = [f"options.{name}" for name in options if name not in READ_OPTIONS]
    # Ollama: -1 generates until the model stops, -2 until the context is full; 0 loads only.
    return (cap if cap is not None and cap > 0 else None), list(stop or ()), ignored


def _ignored(request: CompletionRequest) -> list[str]:
    extra = set(request.model_extra or {})
    return sorted((IGNORED_FIELDS & request.model_fields_set) | extra)


def _output_format(request: CompletionRequest) -> OutputFormat | None:
    fmt = request.format
    if fmt is None or fmt == "":
        return None
    if fmt == "json":
        return OutputFormat("json_object", param="format")
    assert isinstance(fmt, dict)
    return OutputFormat("json_schema", name="output", schema=fmt, strict=True, param="format")


def _args(function: FunctionCall) -> str:
    """Arguments as JSON text (Ollama sends an object; some clients its text)."""
    if isinstance(function.arguments, str):
        return function.arguments
    return json.dumps(function.arguments, ensure_ascii=False)


def _message(message: ChatMessage, where: str, turn: int) -> Message:
    _images(message.images, f"{where}.images")
    if message.role == "assistant" and message.tool_calls:
        calls = tuple(
            ToolCall(
                call.id or f"call_{turn}_{j}",
                call.function.name,
                _args(call.function),
            )
            for j, call in enumerate(message.tool_calls)
        )
        return Message("assistant", message.content, tool_calls=calls)
    if message.role == "tool":
        return Message(
            "tool", message.content, name=message.tool_name, tool_call_id=message.tool_call_id
        )
    return Message(message.role, message.content)


def chat_conversation(request: ChatRequest, model: str) -> Conversation:
    """The engine's conversation for ``/api/chat``; ``model`` is the gateway's name for it."""
    if not request.messages:
        raise BadRequest("messages must not be empty.", param="messages")
    cap, stops, ignored_options = _options(request)
    tools = [
        ToolDefinition(
            tool.function.name,
            tool.function.description,
            tool.function.parameters,
            param=f"tools[{i}].function.parameters",
        )
        for i, tool in enumerate(request.tools or ())
    ]
    return Conversation(
        model=model,
        messages=[_message(m, f"messages[{i}]", i) for i, m in enumerate(request.messages)],
        tools=tools,
        output_format=_output_format(request),
        stops=stops,
        max_tokens=cap,
        max_tokens_param="options.num_predict",
        clamp_max_tokens=True,
        stream=request.stream,
        ignored=_ignored(request) + ignored_options,
    )


def _refuse_generate(request: GenerateRequest) -> None:
    _images(request.images, "images")
    if request.suffix:
        raise UnsupportedParameter(
            "suffix (fill in the middle) is not supported: the grid's jobs take one prompt.",
            param="suffix",
        )
    if request.template:
        raise UnsupportedParameter(
            "template is not supported: the gateway renders prompts with each model's "
            "configured template; send raw: true with a prompt rendered yourself instead.",
            param="template",
        )


def generate_turns(request: GenerateRequest) -> list[tuple[str, str]]:
    """The conversation ``context`` carries, then this prompt: returned as the next context."""
    return [*decode_context(request.context or ()), ("user", request.prompt)]


def generate_conversation(
    request: GenerateRequest, model: str, turns: list[tuple[str, str]]
) -> Conversation:
    """``/api/generate`` rendered with the model's template: system, the turns, the prompt."""
    _refuse_generate(request)
    if not request.prompt:
        raise BadRequest("prompt must not be empty.", param="prompt")
    cap, stops, ignored_options = _options(request)
    messages = [Message("system", request.system)] if request.system else []
    messages.extend(Message("user" if role == "user" else "assistant", t) for role, t in turns)
    return Conversation(
        model=model,
        messages=messages,
        output_format=_output_format(request),
        stops=stops,
        max_tokens=cap,
        max_tokens_param="options.num_predict",
        clamp_max_tokens=True,
        stream=request.stream,
        ignored=_ignored(request) + ignored_options,
    )


def raw_prompts(request: GenerateRequest, model: str) -> TextPrompts:
    """``raw: true``: the prompt goes upstream exactly as sent (no template, no context)."""
    _refuse_generate(request)
    for name in ("system", "context", "format"):
        if getattr(request, name):
            raise BadRequest(
                f"{name} cannot be used with raw: true: a raw prompt is sent exactly as given.",
                param=name,
            )
    cap, stops, ignored_options = _options(request)
    return TextPrompts(
        model=model,
        prompts=[request.prompt],
        stops=stops,
        max_tokens=cap,
        stream=request.stream,
        ignored=_ignored(request) + ignored_options,
    )
