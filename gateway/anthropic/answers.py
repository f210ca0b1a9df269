"""Engine events and answers in Anthropic's shapes: a ``message``, or its stream of events.

A stream is ``message_start``; then per content block ``content_block_start``, its deltas
(``text_delta``, or ``input_json_delta`` carrying the tool input's JSON text as it arrives)
and ``content_block_stop``; then ``message_delta`` (stop reason, usage) and
``message_stop``. ``ping`` is the keep-alive while the job waits; an error after the stream
began is an ``event: error`` and the stream ends there. Built as plain dicts (hot path).
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from gateway.anthropic.errors import error_body
from gateway.engine.answer import Answer
from gateway.engine.events import ChoiceEnd, Event, KeepAlive, TextDelta, ToolCallDelta
from gateway.engine.tools.parsing import arguments_object
from gateway.errors import GatewayError
from gateway.http.exchange import Exchange
from gateway.http.sse import encode
from gateway.serving.answers import PlainCodec

logger = logging.getLogger("gateway.anthropic")

_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def message_id() -> str:
    return "msg_" + secrets.token_hex(12)


def tool_use_id(engine_id: str) -> str:
    """The engine names calls ``call_...``; Anthropic clients expect ``toolu_...``."""
    return "toolu_" + engine_id[5:] if engine_id.startswith("call_") else engine_id


def stop_reason(reason: str | None, stop_sequence: str | None) -> str:
    if reason == "stop" and stop_sequence is not None:
        return "stop_sequence"
    return _REASONS.get(reason or "stop", "end_turn")


def sse_event(name: str, obj: dict[str, Any]) -> bytes:
    """One server-sent event with its ``event:`` line, as Anthropic sends them."""
    return encode(obj, name)


PING = sse_event("ping", {"type": "ping"})
MESSAGE_STOP = sse_event("message_stop", {"type": "message_stop"})


def usage(prompt_tokens: int, completion_tokens: int, cached: bool = False) -> dict[str, int]:
    """Anthropic's ``usage``: the prompt split as Anthropic splits it.

    ``input_tokens`` are the tokens read afresh; the cache's two counts are 0, except on an
    answer from the response cache, whose whole prompt was read from it
    (``cache_read_input_tokens``). Nothing is ever written to a prompt cache here.
    """
    return {
        "input_tokens": 0 if cached else prompt_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": prompt_tokens if cached else 0,
        "output_tokens": completion_tokens,
    }


def render_message(
    answer: Answer, model: str, id_: str | None = None, cached: bool = False
) -> dict[str, Any]:
    """The non-streamed answer: one ``message`` object (only the first choice: no ``n`` here)."""
    choice = answer.choices[0]
    content: list[dict[str, Any]] = []
    if choice.text:
        content.append({"type": "text", "text": choice.text})
    for call in choice.tool_calls:
        content.append(
            {
                "type": "tool_use",
                "id": tool_use_id(call.id),
                "name": call.name,
                "input": arguments_object(call.arguments),
            }
        )
    return {
        "id": id_ or message_id(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(choice.reason, choice.stop_sequence),
        "stop_sequence": choice.stop_sequence,
        "usage": usage(answer.prompt_tokens, answer.completion_tokens, cached),
    }


class MessageCodec(PlainCodec):
    """One answer as a ``message`` or its events; one small state: which block is open."""

    __slots__ = (
        "_blocks",
        "_exchange",
        "_id",
        "_model",
        "_open",
        "_prompt_tokens",
        "_reason",
        "_stop",
    )

    def __init__(self, model: str, prompt_tokens: int, exchange: Exchange | None = None) -> None:
        self._exchange = exchange  # says, once the answer starts, whether it came from the cache
        self._id = message_id()
        self._model = model
        self._prompt_tokens = prompt_tokens
        self._blocks = 0  # content blocks started so far; the open one is the last
        self._open: str | None = None  # "text" | "tool_use" | None
        self._reason: str | None = None
        self._stop: str | None = None

    @property
    def _cached(self) -> bool:
        return self._exchange is not None and self._exchange.cached

    def opening(self) -> bytes:
        message: dict[str, Any] = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage(self._prompt_tokens, 0, self._cached),
        }
        return sse_event("message_start", {"type": "message_start", "message": message})

    def _start(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close()
        self._open = kind
        self._blocks += 1
        start = {"type": "content_block_start", "index": self._blocks - 1, "content_block": block}
        return out + sse_event("content_block_start", start)

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        stop = {"type": "content_block_stop", "index": self._blocks - 1}
        return sse_event("content_block_stop", stop)

    def _delta(self, delta: dict[str, Any]) -> bytes:
        body = {"type": "content_block_delta", "index": self._blocks - 1, "delta": delta}
        return sse_event("content_block_delta", body)

    def event(self, event: Event) -> bytes:
        if isinstance(event, TextDelta):
            if not event.text:
                return b""
            out = b"" if self._open == "text" else self._start("text", {"type": "text", "text": ""})
            return out + self._delta({"type": "text_delta", "text": event.text})
        if isinstance(event, ToolCallDelta):
            call = event.call
            out = b""
            if call.id is not None:
                block: dict[str, Any] = {
                    "type": "tool_use",
                    "id": tool_use_id(call.id),
                    "name": call.name,
                    "input": {},
                }
                out = self._start("tool_use", block)
            if call.arguments and self._open == "tool_use":
                out += self._delta({"type": "input_json_delta", "partial_json": call.arguments})
            return out
        if isinstance(event, ChoiceEnd):
            self._reason, self._stop = event.reason, event.stop_sequence
            return self._close()
        if isinstance(event, KeepAlive):
            return PING
        return b""  # ChoiceReset: only non-streamed answers are ever reset

    def failure(self, error: GatewayError) -> bytes:
        return sse_event("error", error_body(error))

    def render(self, answer: Answer) -> dict[str, Any]:
        return render_message(answer, self._model, self._id, self._cached)

    def closing(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        delta = {
            "type": "message_delta",
            "delta": {
                "stop_reason": stop_reason(self._reason, self._stop),
                "stop_sequence": self._stop,
            },
            # Cumulative, as Anthropic sends it: LangChain reads the whole usage from here.
            "usage": usage(prompt_tokens, completion_tokens, self._cached),
        }
        return self._close() + sse_event("message_delta", delta) + MESSAGE_STOP
