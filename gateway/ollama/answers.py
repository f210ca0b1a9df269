"""Engine events and answers in Ollama's shapes: newline-delimited JSON chunks, or one object.

Every chunk has ``model`` (as the client named it), ``created_at``, and ``message`` (chat) or
``response`` (generate), and ``done``. Text goes out as it comes; tool calls go out whole, in
one chunk at the end of the choice, as Ollama sends them (arguments as objects). The last
chunk says ``done: true`` with ``done_reason`` and the counts and durations, in nanoseconds,
of what the gateway measured (:func:`durations`). A queued job's keep-alive is a chunk with
empty text, which every Ollama client reads as nothing (an empty line would break the
``ollama`` libraries' JSON parsing). An error after the stream began is a last
``{"error": ...}`` line.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from gateway.engine.answer import Answer
from gateway.engine.conversation import ToolCall
from gateway.engine.events import ChoiceEnd, Event, KeepAlive, TextDelta, ToolCallDelta
from gateway.engine.tools.parsing import arguments_object
from gateway.errors import GatewayError
from gateway.http.exchange import Exchange
from gateway.ollama.context import encode_context
from gateway.ollama.errors import error_line
from gateway.serving.answers import PlainCodec

logger = logging.getLogger("gateway.ollama")

NDJSON = "application/x-ndjson"
Kind = Literal["chat", "generate"]


def created_at() -> str:
    """RFC 3339 in UTC, as Ollama writes it."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _ns(seconds: float) -> int:
    return max(0, int(seconds * 1e9))


def durations(exchange: Exchange) -> dict[str, int]:
    """Ollama's durations from the gateway's own marks: ``load_duration`` is planning,
    admission and submission; ``prompt_eval_duration`` the wait for the grid's first text (a
    node takes the job, loads the model, reads the prompt); ``eval_duration`` from the first
    text to the last; ``total_duration`` the whole request so far."""
    now = time.perf_counter()
    started = exchange.started
    submitted = exchange.submitted_at or exchange.marks.get("admitted") or now
    first = exchange.first_text_at or exchange.marks.get("generated") or now
    generated = exchange.marks.get("generated", now)
    return {
        "total_duration": _ns(now - started),
        "load_duration": _ns(submitted - started),
        "prompt_eval_duration": _ns(first - submitted),
        "eval_duration": _ns(generated - first),
    }


def done_reason(reason: str | None) -> str:
    """``length`` when the token cap cut the answer; ``stop`` otherwise (tool calls too)."""
    return "length" if reason == "length" else "stop"


def tool_calls(calls: list[ToolCall]) -> list[dict[str, Any]]:
    return [
        {"function": {"index": i, "name": call.name, "arguments": arguments_object(call.arguments)}}
        for i, call in enumerate(calls)
    ]


def _dumps(obj: Any) -> bytes:
    try:
        return orjson.dumps(obj)
    except orjson.JSONEncodeError:  # lone surrogates: escaped, still valid JSON
        return json.dumps(obj, separators=(",", ":")).encode()


class OllamaCodec(PlainCodec):
    """One answer as Ollama chunks (``stream``) or one object; ``turns`` (generate only, not
    raw) are the conversation so far, returned as ``context`` with this answer added."""

    media_type = NDJSON

    __slots__ = ("_calls", "_exchange", "_head", "_kind", "_model", "_reason", "_text", "turns")

    def __init__(
        self,
        kind: Kind,
        model: str,
        exchange: Exchange,
        turns: list[tuple[str, str]] | None = None,
    ) -> None:
        self._kind: Kind = kind
        self._model = model
        self._exchange = exchange
        self.turns = turns
        self._head = b'{"model":' + _dumps(model) + b',"created_at":"'
        self._calls: list[list[str]] = []  # [id, name, arguments]
        self._reason: str | None = None
        self._text: list[str] | None = [] if turns is not None else None

    def _text_chunk(self, text: str) -> bytes:
        body = _dumps(text)
        if self._kind == "chat":
            middle = b'","message":{"role":"assistant","content":' + body + b"}"
        else:
            middle = b'","response":' + body
        return self._head + created_at().encode() + middle + b',"done":false}\n'

    def _chunk(self, fields: dict[str, Any]) -> bytes:
        return _dumps({"model": self._model, "created_at": created_at(), **fields}) + b"\n"

    def _message(self, text: str, calls: list[ToolCall]) -> dict[str, Any]:
        if self._kind == "generate":
            return {"response": text}
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if calls:
            message["tool_calls"] = tool_calls(calls)
        return {"message": message}

    def opening(self) -> bytes:
        return b""

    def event(self, event: Event) -> bytes:
        if isinstance(event, TextDelta):
            if not event.text:
                return b""
            if self._text is not None:
                self._text.append(event.text)
            return self._text_chunk(event.text)
        if isinstance(event, ToolCallDelta):
            piece = event.call
            if piece.id is not None:
                self._calls.append([piece.id, piece.name or "", ""])
            if self._calls:
                self._calls[-1][2] += piece.arguments
            return b""
        if isinstance(event, ChoiceEnd):
            self._reason = event.reason
            if not self._calls:
                return b""
            calls = [ToolCall(*call) for call in self._calls]
            return self._chunk({**self._message("", calls), "done": False})
        if isinstance(event, KeepAlive):  # a queued job: a chunk with no text keeps the line
            return self._text_chunk("")
        return b""  # ChoiceReset: only non-streamed answers are ever reset

    def failure(self, error: GatewayError) -> bytes:
        return error_line(error)

    def _final(self, text: str, reason: str | None, prompt: int, completion: int) -> dict[str, Any]:
        out: dict[str, Any] = {"done": True, "done_reason": done_reason(reason)}
        if self.turns is not None:
            out["context"] = encode_context([*self.turns, ("assistant", text)])
        times = durations(self._exchange)
        out["total_duration"] = times["total_duration"]
        out["load_duration"] = times["load_duration"]
        out["prompt_eval_count"] = prompt
        out["prompt_eval_duration"] = times["prompt_eval_duration"]
        out["eval_count"] = completion
        out["eval_duration"] = times["eval_duration"]
        return out

    def closing(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        text = "".join(self._text or ())
        final = self._final(text, self._reason, prompt_tokens, completion_tokens)
        return self._chunk({**self._message("", []), **final})

    def render(self, answer: Answer) -> dict[str, Any]:
        choice = answer.choices[0]
        final = self._final(
            choice.text, choice.reason, answer.prompt_tokens, answer.completion_tokens
        )
        return {
            "model": self._model,
            "created_at": created_at(),
            **self._message(choice.text, choice.tool_calls),
            **final,
        }
