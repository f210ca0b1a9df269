"""OpenAI answer shapes for chat and text completions, built as plain dicts (hot path)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from typing import Any

import orjson

from gateway.engine.tools import ToolCallChunk
from gateway.http.sse import encode as sse


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def tool_call_delta(chunk: ToolCallChunk) -> dict[str, Any]:
    """A streamed piece of a call: id, type and name come in its first piece only."""
    if chunk.id is None:
        return {"index": chunk.index, "function": {"arguments": chunk.arguments}}
    return {
        "index": chunk.index,
        "id": chunk.id,
        "type": "function",
        "function": {"name": chunk.name, "arguments": chunk.arguments},
    }


class AnswerShape:
    """Builds every object one request answers with, sharing its id, time and model."""

    __slots__ = ("_text_events", "chat", "created", "fingerprint", "id", "model", "usage_null")

    def __init__(
        self, kind: str, model: str, fingerprint: str, *, include_usage: bool = False
    ) -> None:
        self.chat = kind == "chat"
        self.id = ("chatcmpl-" if self.chat else "cmpl-") + secrets.token_hex(12)
        self.created = int(time.time())
        self.model = model
        self.fingerprint = fingerprint
        #: With ``stream_options.include_usage`` every chat chunk before the usage chunk says
        #: ``"usage": null``, as OpenAI's do (strictly generated clients expect the key). A
        #: text completion chunk leaves it out: its spec allows no null there.
        self.usage_null = include_usage and self.chat
        self._text_events: dict[int, tuple[bytes, bytes] | None] = {}

    def _envelope(self, obj: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": self.fingerprint,
            "choices": choices,
        }

    def chunk(
        self,
        index: int,
        text: str | None = None,
        *,
        role: bool = False,
        finish: str | None = None,
        tool_call: ToolCallChunk | None = None,
        tool_delta: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        if self.chat:
            delta: dict[str, Any] = {}
            if role:
                delta["role"] = "assistant"
                delta["content"] = ""
            if text is not None:
                delta["content"] = text
            if tool_call is not None:
                delta["tool_calls"] = [tool_call_delta(tool_call)]
            if tool_delta is not None:
                delta["tool_calls"] = [tool_delta]
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
            chunk = self._envelope("chat.completion.chunk", [choice])
        else:
            choice = {"index": index, "text": text or "", "logprobs": None, "finish_reason": finish}
            chunk = self._envelope("text_completion", [choice])
        if self.usage_null:
            chunk["usage"] = None
        return chunk

    def text_event(self, index: int, text: str) -> bytes:
        """``sse(self.chunk(index, text))``, from a template: only the text is encoded per event.

        A stream sends one of these per poll, and building and encoding the whole chunk was
        the largest cost of sending one. The template is cut from a chunk rendered the usual
        way, so both give the same bytes.
        """
        if index in self._text_events:
            template = self._text_events[index]
        else:
            template = self._text_events[index] = self._text_template(index)
        if template is not None:
            try:
                return template[0] + orjson.dumps(text) + template[1]
            except orjson.JSONEncodeError:  # lone surrogates: leave them to the usual path
                pass
        return sse(self.chunk(index, text))

    def _text_template(self, index: int) -> tuple[bytes, bytes] | None:
        marker = b'"\\u0000gateway-text\\u0000"'  # how JSON writes the text below
        rendered = sse(self.chunk(index, "\x00gateway-text\x00"))
        head, found, tail = rendered.partition(marker)
        if not found or marker in tail:
            return None
        return head, tail

    def usage_chunk(self, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
        body = self._envelope("chat.completion.chunk" if self.chat else "text_completion", [])
        body["usage"] = usage(prompt_tokens, completion_tokens)
        return body

    def final(
        self,
        texts: Sequence[str],
        reasons: Sequence[str],
        prompt_tokens: int,
        completion_tokens: int,
        tool_calls: Sequence[Sequence[dict[str, Any]]] | None = None,
    ) -> dict[str, Any]:
        """``tool_calls``: per choice, its calls as OpenAI's ``message.tool_calls`` entries."""
        if self.chat:
            calls = tool_calls or [()] * len(texts)
            choices = [
                {
                    "index": i,
                    "message": _message(text, calls[i]),
                    "logprobs": None,
                    "finish_reason": reason,
                }
                for i, (text, reason) in enumerate(zip(texts, reasons, strict=True))
            ]
            body = self._envelope("chat.completion", choices)
        else:
            choices = [
                {"index": i, "text": text, "logprobs": None, "finish_reason": reason}
                for i, (text, reason) in enumerate(zip(texts, reasons, strict=True))
            ]
            body = self._envelope("text_completion", choices)
        body["usage"] = usage(prompt_tokens, completion_tokens)
        return body


def _message(text: str, calls: Sequence[dict[str, Any]]) -> dict[str, Any]:
    if not calls:
        return {"role": "assistant", "content": text, "refusal": None}
    # With tool calls, OpenAI sends null content unless the model wrote prose first.
    return {"role": "assistant", "content": text or None, "refusal": None, "tool_calls": calls}
