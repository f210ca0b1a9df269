"""One choice's answer shaped to what the request asked: tool calls, JSON, or both.

Text goes through the tool detector first (when tools are offered), and the content it lets
through goes through the JSON extractor (when a ``response_format`` asks for JSON). As OpenAI
documents for both together, a tool call wins when the model makes one; otherwise the content
must be the requested JSON.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.engine.tools.spec import OutputSpec
from gateway.engine.tools.stream import Piece, ToolStream
from gateway.engine.tools.structured import JsonStream

__all__ = ["ChoiceOutput", "Outcome"]

TOOL_CALL_INVALID = "tool_call_invalid"
INVALID_JSON_OUTPUT = "invalid_json_output"


@dataclass(frozen=True, slots=True)
class Outcome:
    """How the answer ends: its last pieces and finish reason, or what is wrong with it.

    With a ``problem`` (and its error ``code``) the answer cannot be used; ``retryable`` says
    nothing of it reached the client, so the gateway may ask again. ``note`` is a warning
    about an answer that was used anyway.
    """

    pieces: list[Piece]
    reason: str
    problem: str | None = None
    code: str | None = None
    retryable: bool = False
    note: str | None = None


class ChoiceOutput:
    def __init__(self, spec: OutputSpec, *, streaming: bool) -> None:
        self._tools = ToolStream(spec.tools, streaming=streaming) if spec.tools else None
        self._json = JsonStream(spec.json, streaming=streaming) if spec.json else None

    @property
    def emitted(self) -> bool:
        """Whether any piece has been handed out (and may have reached the client)."""
        return bool(
            (self._tools is not None and self._tools.emitted)
            or (self._json is not None and self._json.emitted)
        )

    def feed(self, text: str) -> list[Piece]:
        pieces: list[Piece] = self._tools.feed(text) if self._tools is not None else [text]
        return self._through_json(pieces)

    def finish(self, reason: str) -> Outcome:
        """The text ended (``reason``: "stop" or "length"): the rest, or why it does not fit."""
        fresh = not self.emitted
        called = False
        note = None
        pieces: list[Piece] = []
        if self._tools is not None:
            end = self._tools.finish()
            if end.problem is not None:
                return self._failed(end.problem, TOOL_CALL_INVALID, reason, fresh)
            called, note = end.called, end.note
            pieces = self._through_json(end.pieces)
        if self._json is not None:
            rest, problem = self._json.finish(check=not called)
            if problem is not None:
                return self._failed(problem, INVALID_JSON_OUTPUT, reason, fresh)
            if rest:
                first_call = next((i for i, p in enumerate(pieces) if not isinstance(p, str)), None)
                pieces.insert(len(pieces) if first_call is None else first_call, rest)
        return Outcome(pieces, "tool_calls" if called else reason, note=note)

    def _through_json(self, pieces: list[Piece]) -> list[Piece]:
        if self._json is None:
            return pieces
        out: list[Piece] = []
        for piece in pieces:
            if isinstance(piece, str):
                text = self._json.feed(piece)
                if text:
                    out.append(text)
            else:
                out.append(piece)
        return out

    @staticmethod
    def _failed(problem: str, code: str, reason: str, fresh: bool) -> Outcome:
        if reason == "length":
            problem += " (the answer reached max_tokens)"
        return Outcome([], reason, problem, code, retryable=fresh)
