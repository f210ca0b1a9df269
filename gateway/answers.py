"""OpenAI answer shapes for chat and text completions, built as plain dicts (hot path)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from typing import Any


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


class AnswerShape:
    """Builds every object one request answers with, sharing its id, time and model."""

    __slots__ = ("chat", "created", "fingerprint", "id", "model")

    def __init__(self, kind: str, model: str, fingerprint: str) -> None:
        self.chat = kind == "chat"
        self.id = ("chatcmpl-" if self.chat else "cmpl-") + secrets.token_hex(12)
        self.created = int(time.time())
        self.model = model
        self.fingerprint = fingerprint

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
        self, index: int, text: str | None = None, *, role: bool = False, finish: str | None = None
    ) -> dict[str, Any]:
        if self.chat:
            delta: dict[str, Any] = {}
            if role:
                delta["role"] = "assistant"
                delta["content"] = ""
            if text is not None:
                delta["content"] = text
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
            return self._envelope("chat.completion.chunk", [choice])
        choice = {"index": index, "text": text or "", "logprobs": None, "finish_reason": finish}
        return self._envelope("text_completion", [choice])

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
    ) -> dict[str, Any]:
        if self.chat:
            choices = [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": text, "refusal": None},
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
