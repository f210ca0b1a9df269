"""Helpers shared by the tool tests: a request's specs, and a stream's pieces reassembled."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Any

from gateway.engine.conversation import Conversation
from gateway.engine.tools import OutputSpec, Piece, ToolCallChunk, ToolSpec, output_spec
from gateway.openai.protocol import ChatCompletionRequest
from gateway.openai.translate import chat_conversation

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city now.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["C", "F"]}},
            "required": ["city"],
        },
    },
}
NOW = {"type": "function", "function": {"name": "now"}}
USER = [{"role": "user", "content": "What is the weather in Paris?"}]


def request(**fields: Any) -> Conversation:
    body: dict[str, Any] = {"model": "m", "messages": USER, **fields}
    return chat_conversation(ChatCompletionRequest.model_validate(body))


def spec(retries: int = 2, **fields: Any) -> OutputSpec:
    found = output_spec(request(**fields), retries)
    assert found is not None
    return found


def tool_spec(choice: Any = "auto", parallel: bool = True, tools: Sequence[Any] = ()) -> ToolSpec:
    found = spec(
        tools=list(tools) or [WEATHER, NOW], tool_choice=choice, parallel_tool_calls=parallel
    ).tools
    assert found is not None
    return found


def assemble(pieces: Iterable[Piece]) -> tuple[str, list[tuple[str, str]]]:
    """(content, [(name, arguments)]) as a client reassembles OpenAI's deltas."""
    content: list[str] = []
    calls: list[list[str]] = []
    for piece in pieces:
        if isinstance(piece, str):
            content.append(piece)
            continue
        assert isinstance(piece, ToolCallChunk)
        if piece.id is not None:
            assert piece.index == len(calls), "calls are announced in order"
            assert piece.id.startswith("call_") and piece.name
            calls.append([piece.name, ""])
        calls[piece.index][1] += piece.arguments
    return "".join(content), [(name, args) for name, args in calls]


def splits(text: str, cuts: Iterable[int]) -> list[str]:
    points = sorted({0, len(text), *(min(max(c, 0), len(text)) for c in cuts)})
    return [text[a:b] for a, b in itertools.pairwise(points)]
