"""The engine's events and answers as OpenAI chat and text completions."""

from __future__ import annotations

import json
from typing import Any

from gateway.engine.answer import Answer
from gateway.engine.events import ChoiceEnd, ChoiceReset, Event, TextDelta, ToolCallDelta
from gateway.engine.planning import Plan
from gateway.engine.tools import ToolCallChunk
from gateway.errors import GatewayError
from gateway.http.shapes import openai_body
from gateway.http.sse import comment, frame
from gateway.http.sse import encode as sse
from gateway.openai.answers import AnswerShape
from gateway.serving.answers import PlainCodec

KEEPALIVE_COMMENT = comment("ping")
DONE = frame(b"[DONE]")


class CompletionCodec(PlainCodec):
    """Streams send the assistant role first (chat), the echoed prompt (text, on ``echo``),
    content and ``tool_calls`` deltas as they come, a final chunk per choice carrying
    ``finish_reason``, the usage chunk only when ``stream_options.include_usage`` asked for it
    (its empty ``choices`` breaks naive clients), and ``data: [DONE]``. An error after the
    stream began is sent as ``data: {"error": ...}``: the openai SDK raises it as an APIError.

    A call of a custom (free-text) tool is ``{"type": "custom", "custom": {"name", "input"}}``
    with the model's input as text; streamed, it comes whole in one delta before the choice's
    last chunk, since its text is only known once the call's JSON is complete.
    """

    __slots__ = ("_held", "custom", "plan", "shape")

    def __init__(self, shape: AnswerShape, plan: Plan) -> None:
        self.shape = shape
        self.plan = plan
        tools = plan.output.tools if plan.output is not None else None
        self.custom = tools.custom if tools is not None else frozenset()
        #: Streamed custom calls being collected: (choice, call index) -> [id, name, arguments].
        self._held: dict[tuple[int, int], list[str]] = {}

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
            return self._call_delta(event.index, event.call)
        if isinstance(event, ChoiceEnd):
            return self._release(event.index) + sse(
                self.shape.chunk(event.index, finish=event.reason)
            )
        if isinstance(event, ChoiceReset):  # only non-streamed answers are ever reset
            return b""
        return KEEPALIVE_COMMENT

    def _call_delta(self, index: int, call: ToolCallChunk) -> bytes:
        key = (index, call.index)
        if key in self._held:
            self._held[key][2] += call.arguments
            return b""
        if call.id is not None and call.name in self.custom:
            self._held[key] = [call.id, call.name, call.arguments]
            return b""
        return sse(self.shape.chunk(index, tool_call=call))

    def _release(self, index: int) -> bytes:
        out = b""
        for key in sorted(k for k in self._held if k[0] == index):
            call_id, name, arguments = self._held.pop(key)
            delta = {
                "index": key[1],
                "id": call_id,
                "type": "custom",
                "custom": custom(name, arguments),
            }
            out += sse(self.shape.chunk(index, tool_delta=delta))
        return out

    def failure(self, error: GatewayError) -> bytes:
        return sse(openai_body(error))

    def closing(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        if not self.plan.include_usage:
            return DONE
        return sse(self.shape.usage_chunk(prompt_tokens, completion_tokens)) + DONE

    def render(self, answer: Answer) -> dict[str, Any]:
        choices = answer.choices
        calls = [
            [
                {"id": call.id, "type": "custom", "custom": custom(call.name, call.arguments)}
                if call.name in self.custom
                else {
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


def custom(name: str, arguments: str) -> dict[str, str]:
    """A free-text tool's call: the ``input`` the model wrote (its raw text if not JSON)."""
    try:
        value = json.loads(arguments)
    except ValueError:
        return {"name": name, "input": arguments}
    text = value.get("input") if isinstance(value, dict) else value
    return {"name": name, "input": text if isinstance(text, str) else json.dumps(text)}


def completion_codec(fingerprint: str, kind: str, plan: Plan) -> CompletionCodec:
    """How a ``chat`` or ``text`` completion's answer is written (live, or a batch line's)."""
    shape = AnswerShape(kind, plan.model.name, fingerprint, include_usage=plan.include_usage)
    return CompletionCodec(shape, plan)
