"""Planning a request: validate it, apply the limits, render the prompt(s), decide the deadline.

Everything here is decided before anything is sent upstream, and is pure: a :class:`Plan`
is the whole description of the jobs a request needs and of how to read their answers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gateway.catalog import ModelCatalog
from gateway.config import LimitSettings, ModelSettings
from gateway.errors import (
    BadRequest,
    UnsupportedParameter,
)
from gateway.prompts import PromptMessage
from gateway.protocol import IGNORED_FIELDS, ChatCompletionRequest, ChatMessage, CompletionRequest
from gateway.tokens import count_tokens
from gateway.tools import (
    OutputSpec,
    assistant_text,
    instructions,
    output_spec,
    tool_call_names,
    with_instructions,
)


@dataclass(slots=True)
class Plan:
    """Everything decided about a request before anything is sent upstream."""

    kind: str  # "chat" | "text"
    model: ModelSettings
    prompts: list[str]  # one upstream input per choice, in choice order
    prompt_tokens: int
    stops: list[str]
    max_tokens: int | None
    timeout: float  # seconds the request may take, end to end
    stream: bool
    include_usage: bool = False
    echo_prompts: list[str] | None = None
    ignored: list[str] = field(default_factory=list)
    output: OutputSpec | None = None  # tool calls or JSON the answer must be
    reprompt: Callable[[str], str] | None = None  # the prompt again, saying what went wrong

    @property
    def n_choices(self) -> int:
        return len(self.prompts)


def _message_text(message: ChatMessage, index: int) -> str:
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for j, part in enumerate(content):
        text = getattr(part, "text", None)
        if part.type not in ("text", "input_text") or not isinstance(text, str):
            raise UnsupportedParameter(
                f"Only text content is supported by this service; messages[{index}].content[{j}] "
                f"has type '{part.type}'.",
                param=f"messages[{index}].content[{j}]",
                code="unsupported_content_type",
            )
        parts.append(text)
    return "".join(parts)


_ROLES = {"developer": "system", "function": "tool"}


def prompt_messages(messages: Sequence[ChatMessage]) -> list[PromptMessage]:
    """Messages as text; earlier tool calls and their results are written back as such."""
    names = tool_call_names(messages)
    result = []
    for i, message in enumerate(messages):
        role = _ROLES.get(message.role, message.role)
        text = _message_text(message, i)
        if message.tool_calls:
            text = assistant_text(text, message.tool_calls)
        name = message.name
        if name is None and role == "tool" and message.tool_call_id:
            name = names.get(message.tool_call_id)
        result.append(PromptMessage(role=role, content=text, name=name))
    return result


#: Fields whose absence would change what the answer means: refused rather than ignored.
_MEANINGFUL_EXTRAS = ("web_search_options", "moderation")


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


def _common_limits(
    n: int,
    stops: list[str],
    max_tokens: int | None,
    limits: LimitSettings,
    param: str,
    prompts: int = 1,
) -> None:
    if n * prompts > limits.max_n:
        what = f"{n}" if prompts == 1 else f"{n} x {prompts} prompts = {n * prompts}"
        raise BadRequest(
            f"n (times the number of prompts) must be at most {limits.max_n}; got {what}.",
            param="n",
        )
    if len(stops) > limits.max_stop_sequences:
        raise BadRequest(
            f"At most {limits.max_stop_sequences} stop sequences are allowed.", param="stop"
        )
    if max_tokens is not None and max_tokens > limits.max_tokens:
        raise BadRequest(
            f"{param} must be at most {limits.max_tokens}; got {max_tokens}.", param=param
        )


def _check_prompt(prompt: str, limits: LimitSettings, param: str) -> None:
    if len(prompt) > limits.max_prompt_chars:
        raise BadRequest(
            f"The prompt is {len(prompt)} characters long; the limit is {limits.max_prompt_chars}.",
            param=param,
            code="context_length_exceeded",
        )


def request_timeout(
    model: ModelSettings, limits: LimitSettings, client_timeout: float | None
) -> float:
    """The request's deadline: per model or default, capped by the client's and the maximum."""
    timeout = model.deadline or limits.default_deadline
    if client_timeout is not None and client_timeout > 0:
        timeout = min(timeout, client_timeout)
    return min(timeout, limits.max_deadline)


def _ignored(request: ChatCompletionRequest | CompletionRequest) -> list[str]:
    extra = set(request.model_extra or {})
    return sorted((IGNORED_FIELDS & request.model_fields_set) | extra)


def plan_chat(
    request: ChatCompletionRequest,
    catalog: ModelCatalog,
    limits: LimitSettings,
    client_timeout: float | None = None,
) -> Plan:
    model = catalog.resolve(request.model)
    _refuse_unsupported(request)
    if len(request.messages) > limits.max_messages:
        raise BadRequest(f"At most {limits.max_messages} messages are allowed.", param="messages")
    stops = request.stop_list()
    max_tokens = request.max_completion_tokens or request.max_tokens or model.max_tokens
    param = "max_completion_tokens" if request.max_completion_tokens else "max_tokens"
    _common_limits(request.n, stops, max_tokens, limits, param)
    output = output_spec(request, limits.structured_retries)
    messages = prompt_messages(request.messages)
    template = catalog.template(model)

    def render(correction: str | None = None) -> str:
        if output is None:
            return template.render(messages)
        # A model may bring its own instructions template (models[].tool_template).
        source = model.tool_template
        return template.render(
            with_instructions(messages, instructions(output, correction, source))
        )

    prompt = render()
    _check_prompt(prompt, limits, "messages")
    return Plan(
        kind="chat",
        model=model,
        prompts=[prompt] * request.n,
        prompt_tokens=count_tokens(prompt),
        stops=stops,
        max_tokens=max_tokens,
        timeout=request_timeout(model, limits, client_timeout),
        stream=request.stream,
        include_usage=bool(request.stream_options and request.stream_options.include_usage),
        ignored=_ignored(request),
        output=output,
        reprompt=render if output is not None and output.retries else None,
    )


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
    if not prompts:
        raise BadRequest("prompt must not be empty.", param="prompt")
    stops = request.stop_list()
    max_tokens = request.max_tokens or model.max_tokens
    _common_limits(request.n, stops, max_tokens, limits, "max_tokens", prompts=len(prompts))
    for prompt in prompts:
        _check_prompt(prompt, limits, "prompt")
    inputs = [p for p in prompts for _ in range(request.n)]
    return Plan(
        kind="text",
        model=model,
        prompts=inputs,
        prompt_tokens=sum(count_tokens(p) for p in prompts),
        stops=stops,
        max_tokens=max_tokens,
        timeout=request_timeout(model, limits, client_timeout),
        stream=request.stream,
        include_usage=bool(request.stream_options and request.stream_options.include_usage),
        echo_prompts=inputs if request.echo else None,
        ignored=_ignored(request),
    )
