"""Tool calls in a model's text answer, tolerating the forms models actually write.

A call is a JSON object naming a function and its arguments, ``{"name": ..., "arguments":
{...}}`` (``parameters`` is accepted for ``arguments``, and OpenAI's own ``{"type":
"function", "function": {...}}`` shape too). It may be written:

- in the canonical tags ``<tool_call>...</tool_call>`` (or after Mistral's ``[TOOL_CALLS]``);
  everything in a tag is a call attempt, so a broken one makes the answer invalid;
- in a code fence, or bare in the text, with prose around: such an object counts as a call only
  when its ``name`` is one of the request's tools, so ordinary JSON in an answer stays text;
- several at once: several tags or objects, a JSON list of them, or ``{"tool_calls": [...]}``.

Prose before the first call is the message's ``content``; text after it is dropped.

:func:`scan_answer` reads a text that may still grow (``final=False``) and decides only what
no continuation can change, which is what lets :mod:`gateway.engine.tools.stream` send a call as it
arrives; :func:`parse_answer` reads a finished answer and checks each call against its tool.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.engine.tools.jsonscan import JsonScan, Node, scan_json
from gateway.engine.tools.spec import ToolSpec

logger = logging.getLogger("gateway.tools")

__all__ = [
    "AnswerScan",
    "CallDraft",
    "ParsedAnswer",
    "ParsedCall",
    "check_call",
    "parse_answer",
    "scan_answer",
]

TAG = "<tool_call>"
TAG_CLOSE = "</tool_call>"
MARKER = "[TOOL_CALLS]"
FENCE = "```"
_OPENERS = (TAG, MARKER, FENCE)
_CANDIDATE = re.compile(r"<tool_call>|\[TOOL_CALLS\]|```|[{\[]")
_FENCE_OPEN = re.compile(r"```[A-Za-z0-9_+.\-]*[ \t\r\n]*")
_WS = re.compile(r"\s*")
_AFTER_VALUE = re.compile(r"\s*(?:```)?\s*")
_SKIPPED_KEYS = frozenset({"arguments", "parameters", "type", "id"})
_DECIDING_KEYS = frozenset({"name", "function", "tool_calls"})
#: How deep a call's structure is read: {"tool_calls": [{"function": {"name": ...}}]}.
_DETAIL = 3
_HEAD = 2048  # characters of a JSON value that usually decide whether it is a call

Verdict = Literal["call", "not", "undecided"]


@dataclass(slots=True)
class CallDraft:
    """A call as far as the text shows it.

    ``arguments`` only ever grows as the text does: for an object it is the raw JSON text so
    far; for any other form it stays empty until the value is complete.
    """

    name: str | None
    arguments: str
    arguments_done: bool
    complete: bool
    problem: str | None = None


@dataclass(slots=True)
class AnswerScan:
    """``text[:content_end]`` is surely content; calls begin at ``call_start`` (if found).

    ``resume`` is where a scan of a longer text may start again and decide the same.
    ``problems`` pairs a message with the number of calls drafted before it arose.
    """

    content_end: int
    call_start: int | None = None
    calls: list[CallDraft] = field(default_factory=list)
    problems: list[tuple[int, str]] = field(default_factory=list)
    resume: int = 0


def _held_tail(text: str, pos: int) -> int:
    """Where a suffix of ``text`` (from ``pos`` on) that may grow into an opener begins."""
    n = len(text)
    for start in range(max(pos, n - max(len(o) for o in _OPENERS) + 1), n):
        tail = text[start:]
        if any(len(tail) < len(o) and o.startswith(tail) for o in _OPENERS):
            return start
    return n


def _classify(node: Node, text: str, known: frozenset[str], decided: bool) -> Verdict:
    """Is this (possibly unfinished) bare JSON value a call? ``decided``: it will not grow."""
    undecided: Verdict = "not" if decided else "undecided"
    if node.kind == "array":
        if not node.items:
            return "not" if node.complete else undecided
        first = node.items[0]
        return _classify(first, text, known, decided) if first.kind == "object" else "not"
    if node.kind != "object":
        return "not"
    for member in node.members:
        value = member.value
        if member.key is None or (value is None and member.key in _DECIDING_KEYS):
            return undecided
        if member.key == "name":
            assert value is not None
            if not value.complete:
                return undecided
            if value.kind == "string" and value.decoded(text) in known:
                return "call"
            return "not"
        if member.key == "function":
            assert value is not None
            return _classify(value, text, known, decided) if value.kind == "object" else "not"
        if member.key == "tool_calls":
            assert value is not None
            return _classify(value, text, known, decided) if value.kind == "array" else "not"
        if member.key not in _SKIPPED_KEYS:
            return "not"
    return "not" if node.complete else undecided


def _arguments(
    node: Node | None, done: bool, text: str, limit: int
) -> tuple[str, bool, str | None]:
    """(arguments text so far, whether final, problem) for the arguments value ``node``."""
    if node is None:
        return ("{}", True, None) if done else ("", False, None)
    if node.kind == "object":
        if node.complete:
            return text[node.start : node.end], True, None
        return text[node.start : limit], False, None
    if not node.complete:
        return "", False, None
    if node.kind == "string":
        value = node.decoded(text)
        return value, True, None
    if node.kind == "literal" and text[node.start : node.end] == "null":
        return "{}", True, None
    return text[node.start : node.end], True, "the arguments are not a JSON object"


def _draft(node: Node, text: str, limit: int) -> CallDraft:
    target = node
    inner = node.member("function")
    if inner is not None and inner.kind == "object":
        target = inner
    name_node = target.member("name")
    args_node = target.member("arguments") or target.member("parameters")
    name: str | None = None
    problem: str | None = None
    if name_node is not None and name_node.complete:
        if name_node.kind == "string":
            name = name_node.decoded(text)
        else:
            problem = "the function name is not a string"
    arguments, arguments_done, args_problem = _arguments(args_node, target.complete, text, limit)
    if node.complete and name is None and problem is None:
        problem = "the call names no function"
    return CallDraft(name, arguments, arguments_done, node.complete, problem or args_problem)


def _drafts(node: Node, text: str, limit: int) -> tuple[list[CallDraft], str | None]:
    """The calls held by a JSON value: one object, a list of them, or ``{"tool_calls": [...]}``."""
    wrapped = node.member("tool_calls") if node.kind == "object" else None
    if wrapped is not None:
        if wrapped.kind != "array":
            return [], "tool_calls is not a list"
        node = wrapped
    if node.kind == "object":
        return [_draft(node, text, limit)], None
    if node.kind != "array":
        return [], "a tool call must be a JSON object"
    drafts: list[CallDraft] = []
    for item in node.items:
        if item.kind != "object":
            return drafts, "a tool call must be a JSON object"
        drafts.append(_draft(item, text, limit))
    if node.complete and not drafts:
        return drafts, "the list of tool calls is empty"
    return drafts, None


class _Region:
    """Reads the calls from the first one on, collecting drafts and problems."""

    def __init__(self, text: str, known: frozenset[str], final: bool, scan: AnswerScan) -> None:
        self.text = text
        self.n = len(text)
        self.known = known
        self.final = final
        self.scan = scan

    def value(self, pos: int, what: str) -> tuple[int | None, bool]:
        """Take the calls of the JSON value at ``pos``.

        Returns (where the value ends or None while it is unfinished, whether it is invalid).
        """
        found: JsonScan = scan_json(self.text, pos, detail=_DETAIL)
        before = len(self.scan.calls)
        limit = self.n if found.error is None else found.error
        if found.root is not None:
            drafts, problem = _drafts(found.root, self.text, limit)
            self.scan.calls.extend(drafts)
            if problem is not None:
                self.scan.problems.append((before, problem))
        if found.error is not None:
            self.scan.problems.append((before, f"the JSON of the {what} is invalid"))
            return None, True
        if found.root is None or not found.root.complete:
            if self.final:
                self.scan.problems.append((before, f"the {what} is incomplete"))
            return None, False
        return found.root.end, False

    def tagged(self, pos: int, opener: str) -> int | None:
        """The inside of ``<tool_call>`` (or after ``[TOOL_CALLS]``): JSON values, then the end."""
        what = "tool call" if opener == TAG else "tool call list"
        while True:
            pos = _skip(_WS, self.text, pos)
            fence = _FENCE_OPEN.match(self.text, pos)
            if fence is not None:
                pos = fence.end()
            if pos >= self.n:
                if self.final:
                    self.scan.problems.append((len(self.scan.calls), f"the {what} is empty"))
                return None
            if self.text[pos] not in "{[":
                self.scan.problems.append((len(self.scan.calls), f"the {what} holds no JSON"))
                return self._past_close(pos)
            end, invalid = self.value(pos, what)
            if end is None:
                return self._past_close(pos) if invalid else None
            pos = _skip(_AFTER_VALUE, self.text, end)
            if opener == TAG and self.text.startswith(TAG_CLOSE, pos):
                return pos + len(TAG_CLOSE)
            if opener == MARKER or pos >= self.n or self.text[pos] not in "{[":
                return pos

    def _past_close(self, pos: int) -> int | None:
        close = self.text.find(TAG_CLOSE, pos)
        if close == -1:
            return None
        return close + len(TAG_CLOSE)

    def group(self, start: int, kind: str) -> int | None:
        """One group of calls starting at ``start``; where scanning goes on, or None to stop."""
        if kind in (TAG, MARKER):
            return self.tagged(start + len(kind), kind)
        if kind == FENCE:
            start = _skip(_FENCE_OPEN, self.text, start)
        end, _ = self.value(start, "tool call")
        return None if end is None else _skip(_AFTER_VALUE, self.text, end)

    def run(self, start: int, kind: str) -> None:
        pos: int | None = start
        while pos is not None:
            pos = self.group(pos, kind)
            if pos is None:
                return
            found = _next_candidate(self.text, pos, self.known, self.final)
            if found is None or found[1] != "call":
                return
            pos, kind = found[0], found[2]


def _skip(pattern: re.Pattern[str], text: str, pos: int) -> int:
    match = pattern.match(text, pos)
    return match.end() if match else pos


def _verdict(text: str, start: int, known: frozenset[str], final: bool) -> Verdict:
    """Whether the JSON value at ``start`` is a call, read from its head when that decides.

    A verdict never depends on what follows the members that decide it, so a long value
    that is not a call is not scanned in detail at every poll.
    """
    end = start + _HEAD
    if end < len(text):
        head = scan_json(text[:end], start, detail=_DETAIL)
        assert head.root is not None
        verdict = _classify(head.root, text, known, head.error is not None)
        if verdict != "undecided":
            return verdict
    found = scan_json(text, start, detail=_DETAIL)
    assert found.root is not None
    return _classify(found.root, text, known, final or found.error is not None)


def _next_candidate(
    text: str, pos: int, known: frozenset[str], final: bool
) -> tuple[int, Verdict, str] | None:
    """The next place at or after ``pos`` where a call starts or where nothing is known yet.

    Returns ``(position, "call", kind)`` or ``(position, "undecided", "")``, skipping JSON and
    fences that are not calls; None when the text holds no call from ``pos`` on. While the
    text may grow, a suffix that may become an opener, and a JSON value that is not a call but
    not finished either, stop the search as ``undecided`` (the latter: from its end on, once
    it ends).
    """
    n = len(text)
    hold = n if final else _held_tail(text, pos)
    while True:
        match = _CANDIDATE.search(text, pos)
        if match is None or match.start() >= hold:
            return None if hold == n else (hold, "undecided", "")
        start, kind = match.start(), match.group()
        if kind in (TAG, MARKER):
            return start, "call", kind
        if kind == FENCE:
            fence = _FENCE_OPEN.match(text, start)
            assert fence is not None
            body = fence.end()
            if body >= n:
                if final:
                    return None
                return start, "undecided", ""
            verdict = _verdict(text, body, known, final) if text[body] in "{[" else "not"
            if verdict != "not":
                return start, verdict, FENCE
            pos = start + len(FENCE)
            continue
        verdict = _verdict(text, start, known, final)
        if verdict != "not":
            return start, verdict, kind
        found = scan_json(text, start, detail=-1)  # only its extent matters now
        assert found.root is not None
        if found.error is not None:
            pos = found.error
        elif found.root.complete:
            pos = found.root.end
        else:
            # Text that is not a call but not finished: all of it is content so far.
            return None if final else (start, "undecided", "json")


def scan_answer(text: str, known: frozenset[str], *, final: bool, resume: int = 0) -> AnswerScan:
    """Where the content ends and what calls follow, as far as ``text`` decides.

    ``known`` are the tool names (a bare JSON object is a call only if it names one);
    ``final`` says the text is complete. ``resume`` must be a ``resume`` of an earlier scan
    of a prefix of ``text``.
    """
    found = _next_candidate(text, resume, known, final)
    if found is None:
        return AnswerScan(content_end=len(text), resume=len(text))
    start, verdict, kind = found
    if verdict == "undecided":
        content_end = len(text) if kind == "json" else start
        return AnswerScan(content_end=content_end, resume=start)
    scan = AnswerScan(content_end=start, call_start=start, resume=start)
    _Region(text, known, final, scan).run(start, kind)
    return scan


# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParsedCall:
    name: str
    arguments: str  # a JSON object, as text


@dataclass(frozen=True, slots=True)
class ParsedAnswer:
    """A finished answer: its prose, its calls, and why the calls cannot be used (if so)."""

    content: str
    calls: tuple[ParsedCall, ...]
    problem: str | None

    @property
    def called(self) -> bool:
        return bool(self.calls) and self.problem is None


def check_call(name: str, arguments: str, spec: ToolSpec) -> str | None:
    """Why this call does not fit the request's tools, or None when it does."""
    tool = spec.allowed(name)
    if tool is None:
        if spec.forced is not None:
            return f"the call is to {name!r} but tool_choice requires {spec.forced!r}"
        return f"there is no function named {name!r}"
    try:
        value = json.loads(arguments)
    except ValueError:
        return f"the arguments of {name} are not valid JSON"
    if not isinstance(value, dict):
        return f"the arguments of {name} are not a JSON object"
    if tool.validator is not None:
        error = tool.validator.problem(value)
        if error is not None:
            where = "/".join(str(part) for part in error.absolute_path) or "(top level)"
            return f"the arguments of {name} do not match its schema at {where}: {error.message}"
    return None


def relevant(scan: AnswerScan, parallel: bool) -> tuple[list[CallDraft], list[str]]:
    """The calls the answer keeps (only the first without parallel calls) and their problems."""
    if parallel:
        return scan.calls, [message for _, message in scan.problems]
    return scan.calls[:1], [message for before, message in scan.problems if before == 0]


def evaluate(text: str, scan: AnswerScan, spec: ToolSpec) -> ParsedAnswer:
    """The answer a final ``scan`` of ``text`` describes, each call checked against ``spec``."""
    if scan.call_start is None:
        return ParsedAnswer(text.strip(), (), None)
    content = text[: scan.call_start].strip()
    drafts, problems = relevant(scan, spec.parallel)
    calls: list[ParsedCall] = []
    for draft in drafts:
        if not draft.complete:
            continue  # the scan reported why
        problem = draft.problem
        if problem is None and draft.name is not None:
            problem = check_call(draft.name, draft.arguments, spec)
        if problem is not None:
            problems.append(problem)
        elif draft.name is not None:
            calls.append(ParsedCall(draft.name, draft.arguments))
    if not drafts and not problems:
        problems.append("the tool call holds no call")
    return ParsedAnswer(content, tuple(calls), "; ".join(problems) or None)


def parse_answer(text: str, spec: ToolSpec) -> ParsedAnswer:
    """The tool calls of a finished answer (and the prose before them)."""
    return evaluate(text, scan_answer(text, spec.names, final=True), spec)


def arguments_object(text: str) -> dict[str, Any]:
    """A call's arguments as the object the doors that send objects (Messages' ``input``,
    Ollama's ``arguments``) need: ``{}`` when the text is empty or not a JSON object."""
    try:
        value = json.loads(text) if text.strip() else {}
    except ValueError:
        value = None
    if not isinstance(value, dict):
        logger.warning("a tool call's arguments are not a JSON object; sent as {}")
        return {}
    return value
