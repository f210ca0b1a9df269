"""Planning a request: validate it, apply the limits, render the prompt(s), decide the deadline.

Everything here is decided before anything is sent upstream, and is pure: a :class:`Plan`
is the whole description of the jobs a request needs and of how to read their answers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gateway.config import LimitSettings, ModelSettings
from gateway.engine.catalog import ModelCatalog
from gateway.engine.conversation import Conversation, Message
from gateway.engine.fitting import fit_prompt, too_long, window_for
from gateway.engine.prompts import PromptMessage
from gateway.engine.tokens import count_tokens
from gateway.engine.tools import (
    OutputSpec,
    assistant_text,
    instructions,
    output_spec,
    tool_call_names,
    with_instructions,
)
from gateway.errors import BadRequest


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


def prompt_messages(messages: Sequence[Message]) -> list[PromptMessage]:
    """Messages as text; earlier tool calls and their results are written back as such."""
    names = tool_call_names(messages)
    result = []
    for message in messages:
        text = message.text
        if message.tool_calls:
            text = assistant_text(text, message.tool_calls)
        name = message.name
        if name is None and message.role == "tool" and message.tool_call_id:
            name = names.get(message.tool_call_id)
        result.append(PromptMessage(role=message.role, content=text, name=name))
    return result


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


def plan_conversation(
    conversation: Conversation,
    catalog: ModelCatalog,
    limits: LimitSettings,
    client_timeout: float | None = None,
) -> Plan:
    """The plan for a conversation, whichever door it came through."""
    model = catalog.resolve(conversation.model)
    if len(conversation.messages) > limits.max_messages:
        raise BadRequest(f"At most {limits.max_messages} messages are allowed.", param="messages")
    stops = [s for s in conversation.stops if s]
    max_tokens = conversation.max_tokens or model.max_tokens
    if conversation.clamp_max_tokens and max_tokens is not None:
        max_tokens = min(max_tokens, limits.max_tokens)
    _common_limits(conversation.n, stops, max_tokens, limits, conversation.max_tokens_param)
    output = output_spec(
        conversation,
        limits.structured_retries,
        limits.schema_check_seconds,
        limits.max_schema_nodes,
    )
    template = catalog.template(model)
    source = model.tool_template  # a model may bring its own instructions template

    def render_with(
        shown: Sequence[PromptMessage],
        spec: OutputSpec | None,
        compact: bool,
        correction: str | None = None,
    ) -> str:
        final = conversation.continue_final  # a trailing assistant message is continued
        if spec is None:
            return template.render(shown, continue_final=final)
        text = instructions(spec, correction, source, compact=compact)
        return template.render(with_instructions(shown, text), continue_final=final)

    messages = prompt_messages(conversation.messages)
    _check_prompt(render_with(messages, output, False), limits, conversation.messages_param)
    window = window_for(model, max_tokens, cap_only=conversation.clamp_max_tokens)
    fitted = fit_prompt(
        messages,
        output,
        render_with,
        window,
        called=[call.name for m in conversation.messages for call in m.tool_calls],
        truncation=conversation.truncation or model.truncation == "auto",
        param=conversation.messages_param,
    )
    trims = list(fitted.trims)
    room = window.size - fitted.tokens
    if max_tokens is not None and max_tokens > room:
        trims.append(f"{conversation.max_tokens_param}: lowered to {room}, what the window leaves")
        max_tokens = room
    output = fitted.output

    def render(correction: str | None = None) -> str:
        return render_with(fitted.messages, output, fitted.compact, correction)

    return Plan(
        kind="chat",
        model=model,
        prompts=[fitted.prompt] * conversation.n,
        prompt_tokens=fitted.tokens,
        stops=stops,
        max_tokens=max_tokens,
        timeout=request_timeout(model, limits, client_timeout),
        stream=conversation.stream,
        include_usage=conversation.include_usage,
        ignored=trims + list(conversation.ignored),
        output=output,
        reprompt=render if output is not None and output.retries else None,
    )


@dataclass(slots=True)
class TextPrompts:
    """A legacy completion: raw prompts, each answered ``n`` times, no chat template."""

    model: str
    prompts: list[str]
    stops: list[str] = field(default_factory=list)
    max_tokens: int | None = None
    n: int = 1
    stream: bool = False
    include_usage: bool = False
    echo: bool = False
    ignored: list[str] = field(default_factory=list)


def plan_prompts(
    request: TextPrompts,
    catalog: ModelCatalog,
    limits: LimitSettings,
    client_timeout: float | None = None,
) -> Plan:
    model = catalog.resolve(request.model)
    prompts = request.prompts
    if not prompts:
        raise BadRequest("prompt must not be empty.", param="prompt")
    stops = [s for s in request.stops if s]
    max_tokens = request.max_tokens if request.max_tokens is not None else model.max_tokens
    _common_limits(request.n, stops, max_tokens, limits, "max_tokens", prompts=len(prompts))
    window = window_for(model, max_tokens)
    for prompt in prompts:
        _check_prompt(prompt, limits, "prompt")
        tokens = count_tokens(prompt)
        if tokens > window.budget:  # a raw prompt has no turns or tools to leave out
            raise too_long(tokens, window, "prompt")
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
        include_usage=request.include_usage,
        echo_prompts=inputs if request.echo else None,
        ignored=list(request.ignored),
    )
