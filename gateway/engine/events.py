"""What a run yields: the events every front door turns into its own wire format.

A choice's text arrives as :class:`TextDelta` and :class:`ToolCallDelta` pieces in order, then
one :class:`ChoiceEnd`; :data:`KEEPALIVE` comes while nothing happens (the job is queued, say),
so a stream can keep its line open; :class:`ChoiceReset` only in non-streamed answers.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.engine.tools import ToolCallChunk

__all__ = [
    "KEEPALIVE",
    "ChoiceEnd",
    "ChoiceReset",
    "Event",
    "KeepAlive",
    "TextDelta",
    "ToolCallChunk",
    "ToolCallDelta",
]


@dataclass(frozen=True, slots=True)
class TextDelta:
    index: int
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    index: int
    call: ToolCallChunk


@dataclass(frozen=True, slots=True)
class ChoiceReset:
    """Non-streamed only: forget this choice's text so far; the job's final log replaces it."""

    index: int


@dataclass(frozen=True, slots=True)
class ChoiceEnd:
    index: int
    reason: str  # "stop" | "length" | "tool_calls"
    stop_sequence: str | None = None  # the one that ended the text, on "stop"


class KeepAlive:
    """Nothing happened for a while: streams send an SSE comment so proxies keep the line."""


KEEPALIVE = KeepAlive()
Event = TextDelta | ToolCallDelta | ChoiceReset | ChoiceEnd | KeepAlive
