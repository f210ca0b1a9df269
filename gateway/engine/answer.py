"""Events -> the whole answer, for clients that asked for it in one piece.

:class:`AnswerBuilder` folds a run's events into one :class:`ChoiceAnswer` per choice, whatever
the wire format: each door renders the finished :class:`Answer` its own way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.engine.conversation import ToolCall
from gateway.engine.events import ChoiceEnd, ChoiceReset, Event, TextDelta, ToolCallDelta


@dataclass(slots=True)
class ChoiceAnswer:
    text: str = ""
    reason: str = "stop"
    stop_sequence: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)


@dataclass(slots=True)
class Answer:
    choices: list[ChoiceAnswer]
    prompt_tokens: int = 0
    completion_tokens: int = 0


class AnswerBuilder:
    """Collects the events of ``n`` choices; :meth:`answer` when the run is over."""

    __slots__ = ("_calls", "_ends", "_texts")

    def __init__(self, n: int) -> None:
        self._texts: list[list[str]] = [[] for _ in range(n)]
        self._calls: list[list[list[str]]] = [[] for _ in range(n)]  # [id, name, arguments]
        self._ends: list[ChoiceEnd | None] = [None] * n

    def add(self, event: Event) -> bool:
        """Take one event; True when it carried text or a piece of a call."""
        if isinstance(event, TextDelta):
            self._texts[event.index].append(event.text)
            return True
        if isinstance(event, ToolCallDelta):
            piece = event.call
            calls = self._calls[event.index]
            if piece.id is not None:
                calls.append([piece.id, piece.name or "", ""])
            calls[piece.index][2] += piece.arguments
            return True
        if isinstance(event, ChoiceReset):
            self._texts[event.index].clear()
            self._calls[event.index].clear()
        elif isinstance(event, ChoiceEnd):
            self._ends[event.index] = event
        return False

    def answer(self, prompt_tokens: int = 0, completion_tokens: int = 0) -> Answer:
        choices = []
        for texts, calls, end in zip(self._texts, self._calls, self._ends, strict=True):
            choices.append(
                ChoiceAnswer(
                    text="".join(texts),
                    reason=end.reason if end is not None else "stop",
                    stop_sequence=end.stop_sequence if end is not None else None,
                    tool_calls=[ToolCall(i, name, args) for i, name, args in calls],
                )
            )
        return Answer(choices, prompt_tokens, completion_tokens)
