"""From the upstream job's growing log to the text a client receives.

The jobs API returns the *whole* log so far on every poll. Three small objects turn that into
deltas, per choice:

- :class:`LogCursor` takes each cumulative log and returns only what is new. Terminal escape
  codes are stripped and ``\\r\\n`` becomes ``\\n`` (:func:`normalize_log`), and anything that a
  later poll could still change (an escape sequence cut in half, a ``\\r`` that may be the first
  half of ``\\r\\n``) waits for the next poll. If the log is ever rewritten rather than appended
  to, nothing more is sent until the log again continues what was sent: a client never
  receives text twice or a garbled mix (and a finished log that never does ends a stream with
  ``log_rewritten``, see :mod:`gateway.engine.choices`).
- :class:`StopCutter` withholds text that may be the start of a stop sequence, and ends the text
  before the first one, however the sequence is split across polls.
- :class:`ChoiceText` combines that with the ``max_tokens`` cut (counted as in
  :mod:`gateway.engine.tokens`) and decides the ``finish_reason``.

Whatever the split into polls, the text a :class:`ChoiceText` emits is exactly
:func:`cut_final` of the final text, with the same ``finish_reason``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from gateway.engine.tokens import TokenCounter, count_tokens, truncate_to_tokens

__all__ = [
    "ChoiceText",
    "FinishReason",
    "LogCursor",
    "StopCutter",
    "cut_at_stop",
    "cut_final",
    "normalize_log",
]

FinishReason = Literal["stop", "length"]

# ECMA-48 escape sequences, 7-bit forms: CSI (ESC [ params intermediates final), the string
# sequences OSC/DCS/SOS/PM/APC (ESC ] P X ^ _ ... ended by BEL or ST; bounded, so a stray
# "ESC ]" cannot swallow the rest of the log), two-byte and nF escapes (ESC intermediates final),
# and a stray ESC. Each complete form is followed by a group matching the same form cut off by
# the end of the text: while the log may still grow, those are held back rather than guessed at.
_CSI = r"\x1b\[[0-?]*[ -/]*"
_STRING = r"\x1b[\]PX^_][^\x07\x1b]{0,4096}"
_SHORT = r"\x1b[ -/]*"
_ESCAPES_FINAL = re.compile(rf"{_CSI}[@-~]|{_STRING}(?:\x07|\x1b\\)|{_SHORT}[0-~]|\x1b")
_ESCAPES_STREAM = re.compile(
    rf"{_CSI}[@-~]|(?P<csi>{_CSI}\Z)"
    rf"|{_STRING}(?:\x07|\x1b\\)|(?P<string>{_STRING}\x1b?\Z)"
    rf"|{_SHORT}[0-~]|(?P<short>{_SHORT}\Z)"
    r"|\x1b"
)


def normalize_log(raw: str, strip_ansi: bool) -> str:
    """A finished log as text: escape sequences removed (when asked), ``\\r\\n`` -> ``\\n``."""
    if strip_ansi:
        raw = _ESCAPES_FINAL.sub("", raw)
    return raw.replace("\r\n", "\n")


def _scan(log: str, start: int, strip_ansi: bool, final: bool) -> tuple[str, int]:
    """``log[start:]`` normalised, and where in ``log`` the part a later poll cannot change ends.

    ``start`` must be 0 or a point a previous scan stopped at.
    """
    end = len(log)
    if strip_ansi:
        pieces: list[str] = []
        pos = last_end = start
        pattern = _ESCAPES_FINAL if final else _ESCAPES_STREAM
        for match in pattern.finditer(log, start):
            if match.lastgroup is not None:  # cut off by the end of the log: hold it back
                end = match.start()
                break
            if match.start() > pos:
                pieces.append(log[pos : match.start()])
                last_end = match.start()
            pos = match.end()
        if end > pos:
            pieces.append(log[pos:end])
            last_end = end
        text = "".join(pieces)
    else:
        text = log[start:]
        last_end = end
    if not final and text.endswith("\r"):  # maybe the first half of "\r\n"
        text = text[:-1]
        end = last_end - 1
    return text.replace("\r\n", "\n"), end


class LogCursor:
    """Turns the cumulative job log of successive polls into the new text of each poll."""

    __slots__ = ("_diverged", "_emitted", "_end", "_seen", "_strip", "rewrites")

    def __init__(self, strip_ansi: bool = True) -> None:
        self._strip = strip_ansi
        # The raw log as of the last poll that advanced: all of it, not only up to `_end`,
        # since what was made of the text before `_end` can depend on the characters after it
        # (a lone ESC is text-free only if no "[" follows); a change there is a rewrite.
        self._seen = ""
        self._end = 0  # how much of the raw log has been turned into emitted text
        self._emitted: list[str] = []
        self._diverged = False
        #: How many times the log stopped continuing what was already emitted (rewritten or
        #: shrunk in a way a client would see). Each such episode counts once.
        self.rewrites = 0

    @property
    def text(self) -> str:
        """Everything emitted so far."""
        if len(self._emitted) > 1:
            self._emitted = ["".join(self._emitted)]
        return self._emitted[0] if self._emitted else ""

    @property
    def diverged(self) -> bool:
        """True while the log does not continue what was emitted (nothing is emitted then)."""
        return self._diverged

    def advance(self, log: str, *, final: bool = False) -> str:
        """The text that is new in ``log`` (the whole log so far), possibly ``""``.

        Pass ``final=True`` for the log of a finished job: nothing is held back then.
        """
        if not self._diverged and log.startswith(self._seen):
            # The usual case: the log grew. Only the new part is scanned.
            new, end = _scan(log, self._end, self._strip, final)
        else:
            text, end = _scan(log, 0, self._strip, final)
            emitted = self.text
            if not text.startswith(emitted):
                if not self._diverged:
                    self._diverged = True
                    self.rewrites += 1
                return ""
            self._diverged = False
            new = text[len(emitted) :]
        self._seen = log
        self._end = end
        if new:
            self._emitted.append(new)
        return new


class StopCutter:
    """Ends a streamed text before the first stop sequence, which never leaks to the client.

    Text that could be the start of a stop sequence is held back until it is known not to be.
    """

    __slots__ = ("_held", "_stopped", "_stops", "matched")

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(dict.fromkeys(s for s in stops if s))
        self._held = ""
        self._stopped = False
        #: The stop sequence that ended the text (Anthropic's answers name it).
        self.matched: str | None = None

    @property
    def stopped(self) -> bool:
        return self._stopped

    def feed(self, delta: str) -> tuple[str, bool]:
        """``(text safe to emit now, whether a stop sequence has ended the text)``."""
        if self._stopped:
            return "", True
        if not self._stops:
            return delta, False
        text = self._held + delta
        hit = _first_stop(text, self._stops)
        hold = _partial_start(text, self._stops)
        if hit is not None and hit <= hold:
            self._stopped = True
            self._held = ""
            self.matched = _stop_at(text, hit, self._stops)
            return text[:hit], True
        # A stop that starts before `hold` would already have been found, so everything before
        # `hold` is safe; from `hold` on the text may still turn into (an earlier) stop.
        self._held = text[hold:]
        return text[:hold], False

    def flush(self) -> str:
        """At the end of the text: what was held back, cut at a stop sequence if it holds one."""
        if self._stopped:
            return ""
        text, self._held = self._held, ""
        hit = _first_stop(text, self._stops)
        if hit is not None:
            self._stopped = True
            self.matched = _stop_at(text, hit, self._stops)
            return text[:hit]
        return text


def _stop_at(text: str, at: int, stops: Sequence[str]) -> str | None:
    return next((stop for stop in stops if text.startswith(stop, at)), None)


def _first_stop(text: str, stops: Sequence[str]) -> int | None:
    found = [i for i in (text.find(stop) for stop in stops) if i >= 0]
    return min(found) if found else None


def _partial_start(text: str, stops: Sequence[str]) -> int:
    """Where the longest suffix of ``text`` that is a proper prefix of some stop starts."""
    best = len(text)
    for stop in stops:
        i = max(0, len(text) - len(stop) + 1)
        while i < best:
            i = text.find(stop[0], i, best)
            if i < 0:
                break
            if stop.startswith(text[i:]):
                best = i
                break
            i += 1
    return best


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to the first occurrence of any (non-empty) stop, and whether one occurred."""
    hit = _first_stop(text, [s for s in stops if s])
    return (text, False) if hit is None else (text[:hit], True)


def cut_final(text: str, stops: Sequence[str], max_tokens: int | None) -> tuple[str, FinishReason]:
    """The completion for a finished ``text``, in one go; what :class:`ChoiceText` streams.

    Cut at the first stop sequence, then at ``max_tokens`` tokens. ``finish_reason`` is
    ``"length"`` when the text (after the stop cut) had more than ``max_tokens`` tokens, else
    ``"stop"``: a job that ended by itself, or at a stop sequence, within the limit.
    """
    _check_max_tokens(max_tokens)
    text, _ = cut_at_stop(text, stops)
    if max_tokens is not None and count_tokens(text) > max_tokens:
        return truncate_to_tokens(text, max_tokens), "length"
    return text, "stop"


def _check_max_tokens(max_tokens: int | None) -> None:
    if max_tokens is not None and max_tokens < 0:
        raise ValueError(f"max_tokens must not be negative, got {max_tokens}")


class ChoiceText:
    """One choice's text: stop sequences and ``max_tokens`` applied as the deltas arrive.

    ``feed`` returns ``(text to emit, finish_reason or None)``; once a reason has been
    returned, the choice is over and further calls return ``("", reason)``. "length" is known
    as soon as a token beyond ``max_tokens`` appears; the text emitted then ends at exactly
    ``max_tokens`` tokens.
    """

    __slots__ = ("_counter", "_cutter", "_max", "_parts", "_reason")

    def __init__(self, stops: Sequence[str] = (), max_tokens: int | None = None) -> None:
        _check_max_tokens(max_tokens)
        self._cutter = StopCutter(stops)
        self._counter = TokenCounter()
        self._max = max_tokens
        self._parts: list[str] = []
        self._reason: FinishReason | None = None

    @property
    def text(self) -> str:
        """Everything emitted so far."""
        if len(self._parts) > 1:
            self._parts = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""

    @property
    def completion_tokens(self) -> int:
        """Tokens in :attr:`text`."""
        if self._reason == "length":
            assert self._max is not None
            return self._max
        return self._counter.total

    @property
    def finish_reason(self) -> FinishReason | None:
        return self._reason

    @property
    def stop_sequence(self) -> str | None:
        """The stop sequence that ended the text, if one did."""
        return self._cutter.matched if self._reason == "stop" else None

    def feed(self, delta: str) -> tuple[str, FinishReason | None]:
        """New text from the job -> ``(text to emit now, finish_reason or None)``."""
        if self._reason is not None:
            return "", self._reason
        safe, stopped = self._cutter.feed(delta)
        out = self._release(safe)
        if stopped and self._reason is None:
            self._reason = "stop"
        return out, self._reason

    def finish(self) -> tuple[str, FinishReason]:
        """The job ended: ``(what was held back, finish_reason)``.

        The reason is "stop", unless the held-back text takes the choice past ``max_tokens``
        ("length"), or an earlier call already ended it (that reason again, with ``""``).
        """
        if self._reason is not None:
            return "", self._reason
        out = self._release(self._cutter.flush())
        if self._reason is None:
            self._reason = "stop"
        return out, self._reason

    def _release(self, safe: str) -> str:
        if not safe:
            return ""
        total = self._counter.feed(safe)
        if self._max is not None and total > self._max:
            # Text already emitted is within the first `max` tokens of any continuation
            # (see gateway.engine.tokens), so the cut extends it.
            emitted = self.text
            out = truncate_to_tokens(emitted + safe, self._max)[len(emitted) :]
            self._reason = "length"
        else:
            out = safe
        if out:
            self._parts.append(out)
        return out
