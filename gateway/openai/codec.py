"""The engine's events and answers as OpenAI chat and text completions."""

from __future__ import annotations

from typing import Any

from gateway.engine.answer import Answer
from gateway.engine.events import ChoiceEnd, ChoiceReset, Event, TextDelta, ToolCallDelta
from gateway.engine.planning import Plan
from gateway.errors import GatewayError
from gateway.openai.answers import AnswerShape, sse
from gateway.serving.answers import PlainCodec

KEEPALIVE_COMMENT = b": ping\n\n"
DONE = b"data: [DONE]\n\n"


class CompletionCodec(PlainCodec):
    """Streams send the assistant role first (chat), the echoed prompt (text, on ``echo``),
    content and ``tool_calls`` deltas as they come, a final chunk per choice carrying
    ``finish_reason``, the usage chunk only when ``stream_options.include_usage`` asked for it
    (its empty ``choices`` breaks naive clients), and ``data: [DONE]``. An error after the
    stream began is sent as ``data: {"error": ...}``: the openai SDK raises it as an APIError.
    """

    __slots__ = ("plan", "shape")

    def __init__(self, shape: AnswerShape, plan: Plan) -> None:
        self.shape = shape
        self.plan = plan

    def opening(self) -> bytes:
        shape, n = self.shape, self.plan.n_choices
        head = b"".join(sse(shape.chunk(i, role=True)) for i in range(n)) if shape.chat else b""
        echo = self.plan.echo_prompts
        if echo is not None:
            head += b"".join(sse(shape.chunk(i, echo[i])) for i in range(n))
        return head

    def event(self, event: Event) -> bytes:
        if isinstance(event, TextDelta):
            return self.shape.text_event(event.index, event.text)
        if isinstance(event, ToolCallDelta):
            return sse(self.shape.chunk(event.index, tool_call=event.call))
        if isinstance(event, ChoiceEnd):
            return sse(self.shape.chunk(event.index, finish=event.reason))
        if isinstance(event, ChoiceReset):  # only non-streamed answers are ever reset
            return b""
        return KEEPALIVE_COMMENT

    def failure(self, error: GatewayError) -> bytes:
        return sse(error.to_dict())

    def closing(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        if not self.plan.include_usage:
            return DONE
        return sse(self.shape.usage_chunk(prompt_tokens, completion_tokens)) + DONE

    def render(self, answer: Answer) -> dict[str, Any]:
        choices = answer.choices
        calls = [
            [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in choice.tool_calls
            ]
            for choice in choices
        ]
        return self.shape.final(
            [c.text for c in choices],
            [c.reason for c in choices],
            answer.prompt_tokens,
            answer.completion_tokens,
            calls if any(calls) else None,
        )


def completion_codec(fingerprint: str, kind: str, plan: Plan) -> CompletionCodec:
    """How a ``chat`` or ``text`` completion's answer is written (live, or a batch line's)."""
    shape = AnswerShape(kind, plan.model.name, fingerprint, include_usage=plan.include_usage)
    return CompletionCodec(shape, plan)
