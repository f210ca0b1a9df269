"""One choice's answer, turned into content and tool-call pieces as the text arrives.

:class:`ToolStream` re-reads the text so far with :func:`~gateway.engine.tools.parsing.scan_answer`
after every delta and sends what no continuation can change: prose as soon as it cannot be
the start of a call (only what might still open one, and trailing whitespace, wait), then each
call as OpenAI's incremental ``tool_calls`` deltas: index, id and name first, then argument
fragments as they arrive. When the text ends, :meth:`ToolStream.finish` parses the whole answer
exactly as :func:`~gateway.engine.tools.parsing.parse_answer` does and sends the rest, so a streamed
answer reassembles to the non-streamed one however the text was split.

With ``streaming=False`` nothing is sent before the end: the choice then still has every
option (a retry, or the text as content) when the answer turns out not to fit.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from gateway.engine.tools.jsonscan import GrowingText
from gateway.engine.tools.parsing import AnswerScan, ParsedAnswer, evaluate, relevant, scan_answer
from gateway.engine.tools.spec import ToolSpec

__all__ = ["Piece", "StreamEnd", "ToolCallChunk", "ToolStream", "new_call_id"]


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


@dataclass(frozen=True, slots=True)
class ToolCallChunk:
    """A piece of the ``index``-th call: its id and name come once, first; then arguments."""

    index: int
    id: str | None
    name: str | None
    arguments: str


Piece = str | ToolCallChunk  # content text, or a piece of a call


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """The last pieces of an answer, whether it is a tool call, and what is wrong with it.

    ``problem`` means the answer cannot be used as it is; ``note`` that it was used anyway
    (as text, where ``tool_choice`` allowed it) and deserves a warning.
    """

    pieces: list[Piece]
    called: bool
    problem: str | None = None
    note: str | None = None


@dataclass(slots=True)
class _Sent:
    id: str
    name: str
    arguments: int  # characters of the arguments already sent


class ToolStream:
    def __init__(self, spec: ToolSpec, *, streaming: bool = True) -> None:
        self._spec = spec
        self._streaming = streaming
        self._text = GrowingText()
        self._resume = 0
        self._lead: int | None = None  # where the content's first non-space character is
        self._content = 0  # the content is sent up to this offset of the text
        self._calls: list[_Sent] = []
        self.emitted = False

    @property
    def text(self) -> str:
        return self._text.value

    def feed(self, delta: str) -> list[Piece]:
        """More text of the answer -> the pieces that can be sent now."""
        self._text.append(delta)
        if not self._streaming:
            return []
        text = self.text
        scan = scan_answer(text, self._spec.names, final=False, resume=self._resume)
        self._resume = scan.resume
        pieces: list[Piece] = []
        if not self._spec.must_call:
            self._send_content(text, scan.content_end, pieces)
        if scan.call_start is not None and not relevant(scan, self._spec.parallel)[1]:
            self._send_calls(text, scan, pieces)
        self.emitted = self.emitted or bool(pieces)
        return pieces

    def finish(self) -> StreamEnd:
        """The text is complete: the rest of the answer, checked as a whole."""
        text = self.text
        scan = scan_answer(text, self._spec.names, final=True, resume=self._resume)
        answer = evaluate(text, scan, self._spec)
        pieces: list[Piece] = []
        if answer.called:
            problem = self._finish_calls(text, scan, answer, pieces)
            return StreamEnd(pieces, True, problem)
        if self._calls:
            problem = answer.problem or "the answer ended before its tool call was complete"
            return StreamEnd(pieces, True, problem)
        if answer.problem is not None and self._spec.must_call:
            return StreamEnd(pieces, False, answer.problem)
        if self._spec.must_call:
            return StreamEnd(pieces, False, "the answer holds no tool call")
        self._send_content(text, len(text), pieces)
        self.emitted = self.emitted or bool(pieces)
        note = None if answer.problem is None else f"answered as text: {answer.problem}"
        return StreamEnd(pieces, False, None, note)

    # -----------------------------------------------------------------------------------------

    def _send_content(self, text: str, upto: int, pieces: list[Piece]) -> None:
        """Send the content up to ``text[:upto]``, less its trailing whitespace."""
        end = upto
        while end > self._content and text[end - 1].isspace():
            end -= 1
        if self._lead is None:
            start = self._content
            while start < end and text[start].isspace():
                start += 1
            if start == end:
                return
            self._lead = self._content = start
        if end > self._content:
            pieces.append(text[self._content : end])
            self._content = end

    def _send_calls(self, text: str, scan: AnswerScan, pieces: list[Piece]) -> None:
        drafts, _ = relevant(scan, self._spec.parallel)
        for index, draft in enumerate(drafts):
            if index == len(self._calls):
                if draft.name is None or self._spec.allowed(draft.name) is None:
                    return
                if index == 0:
                    assert scan.call_start is not None
                    self._send_content(text, scan.call_start, pieces)
                sent = _Sent(new_call_id(), draft.name, 0)
                self._calls.append(sent)
                pieces.append(ToolCallChunk(index, sent.id, sent.name, ""))
            sent = self._calls[index]
            if len(draft.arguments) > sent.arguments:
                pieces.append(ToolCallChunk(index, None, None, draft.arguments[sent.arguments :]))
                sent.arguments = len(draft.arguments)
            if not draft.arguments_done:
                return

    def _finish_calls(
        self, text: str, scan: AnswerScan, answer: ParsedAnswer, pieces: list[Piece]
    ) -> str | None:
        """Send what is left of a valid answer; a problem if it contradicts what was sent."""
        assert scan.call_start is not None
        if not self._calls:
            self._send_content(text, scan.call_start, pieces)
        for index, call in enumerate(answer.calls):
            if index == len(self._calls):
                self._calls.append(_Sent(new_call_id(), call.name, 0))
                pieces.append(ToolCallChunk(index, self._calls[index].id, call.name, ""))
            sent = self._calls[index]
            if sent.name != call.name or len(call.arguments) < sent.arguments:
                return "the tool call changed after it was sent"  # a bug, never seen
            if len(call.arguments) > sent.arguments:
                pieces.append(ToolCallChunk(index, None, None, call.arguments[sent.arguments :]))
                sent.arguments = len(call.arguments)
        if len(self._calls) > len(answer.calls):
            return "a tool call that was sent turned out invalid"
        self.emitted = self.emitted or bool(pieces)
        return None
