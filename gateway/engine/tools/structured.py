"""JSON answers for ``response_format``: the JSON value cut out of the text, then validated.

Models wrap JSON in prose and code fences. The answer's JSON is the first value that starts
with ``{`` (``[`` where the schema asks for an array) and goes on as JSON past its first
significant character; text before it and after it is dropped. :class:`JsonStream` sends that
value as it arrives; what is sent is always what a non-streamed answer holds, because both
use the same rule (:func:`locate`) on the same text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from gateway.engine.tools.jsonscan import GrowingText, JsonScan, scan_json
from gateway.engine.tools.spec import JsonSpec

__all__ = ["JsonFound", "JsonStream", "check_json", "extract_json", "locate"]

_SPACE = " \t\n\r"


@dataclass(frozen=True, slots=True)
class JsonFound:
    """The JSON value at ``start``; ``resume`` is where a longer text's search may start."""

    start: int | None
    scan: JsonScan | None
    resume: int


def locate(text: str, opener: str, *, final: bool, resume: int = 0) -> JsonFound:
    """The answer's JSON value, as far as ``text`` shows it.

    A candidate (an ``opener`` character) is taken once the character after it (spaces aside)
    continues JSON; a candidate that fails before that is passed over.
    """
    pos = resume
    n = len(text)
    while True:
        start = min((i for i in (text.find(c, pos) for c in opener) if i != -1), default=-1)
        if start == -1:
            return JsonFound(None, None, n)
        first = start + 1
        while first < n and text[first] in _SPACE:
            first += 1
        found = scan_json(text, start, detail=-1)
        if found.error is not None and found.error <= first:
            pos = start + 1
            continue
        if first >= n and not final:
            return JsonFound(None, None, start)
        if first >= n:
            return JsonFound(None, None, n)
        return JsonFound(start, found, start)


def check_json(value_text: str, spec: JsonSpec) -> str | None:
    """Why this JSON text does not fit ``spec``, or None."""
    try:
        value = json.loads(value_text)
    except ValueError:
        return "the answer is not valid JSON"
    if spec.kind == "json_object" and not isinstance(value, dict):
        return "the answer is not a JSON object"
    if spec.validator is not None:
        error = spec.validator.problem(value)
        if error is not None:
            where = "/".join(str(part) for part in error.absolute_path) or "(top level)"
            return f"the JSON does not match the schema at {where}: {error.message}"
    return None


def extract_json(text: str, spec: JsonSpec) -> tuple[int, str, str | None]:
    """(where the JSON starts, its text, why it does not fit or None) for a finished answer."""
    found = locate(text, spec.opener, final=True)
    if found.start is None or found.scan is None:
        return len(text), "", "the answer holds no JSON"
    root = found.scan.root
    if found.scan.error is not None or root is None or not root.complete:
        end = found.scan.error if found.scan.error is not None else len(text)
        return found.start, text[found.start : end], "the answer's JSON is invalid or incomplete"
    value_text = text[found.start : root.end]
    return found.start, value_text, check_json(value_text, spec)


class JsonStream:
    """One choice's JSON answer, sent as it arrives (``streaming``) or all at the end."""

    def __init__(self, spec: JsonSpec, *, streaming: bool = True) -> None:
        self._spec = spec
        self._streaming = streaming
        self._text = GrowingText()
        self._resume = 0
        self._start: int | None = None  # where the JSON value starts, once sending began
        self._sent = 0  # characters of the JSON value already sent
        self.emitted = False

    @property
    def text(self) -> str:
        return self._text.value

    def feed(self, delta: str) -> str:
        self._text.append(delta)
        if not self._streaming:
            return ""
        text = self.text
        found = locate(text, self._spec.opener, final=False, resume=self._resume)
        self._resume = found.resume
        if found.start is None or found.scan is None:
            return ""
        scan = found.scan
        if scan.error is not None:
            end = scan.error
        elif scan.root is not None and scan.root.complete:
            end = scan.root.end
        else:
            end = len(text)
        self._start = found.start
        return self._send(text[found.start : end])

    def finish(self, *, check: bool = True) -> tuple[str, str | None]:
        """(the rest of the JSON, why the answer does not fit or None).

        ``check=False`` when the answer is a tool call: its content need not be the JSON.
        """
        start, value_text, problem = extract_json(self.text, self._spec)
        if self._start is not None and (start != self._start or len(value_text) < self._sent):
            return "", "the JSON changed after it was sent"  # a bug, never seen
        rest = self._send(value_text)
        return rest, problem if check else None

    def _send(self, value_text: str) -> str:
        rest = value_text[self._sent :]
        self._sent = len(value_text)
        self.emitted = self.emitted or bool(rest)
        return rest
