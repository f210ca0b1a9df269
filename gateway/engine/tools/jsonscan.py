"""A JSON scanner for text that may stop anywhere: where each value starts and ends, so far.

Models write tool calls and JSON answers a few words at a time. To stream them, the gateway
must know, for a text cut in the middle of a value, which values have begun, which are
complete, and the first character (if any) that can no longer be JSON. :mod:`json` only
answers for complete texts, so this module scans by hand and keeps positions.

The grammar is strict JSON (RFC 8259): no comments, no trailing commas, no single quotes.
Callers that need the members of only the first levels say so (``detail``): deeper containers
are first handed to the C decoder, which checks a complete one much faster, so re-scanning a
long answer at every poll stays cheap; only the values still open are scanned by hand.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["JsonScan", "Member", "Node", "scan_json"]

Kind = Literal["object", "array", "string", "number", "literal"]

_WS = re.compile(r"[ \t\n\r]*")
_STRING_BODY = re.compile(r'(?:[^"\\\x00-\x1f]+|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*')
_CUT_ESCAPE = re.compile(r"\\(?:u[0-9a-fA-F]{0,3})?\Z")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_NUMBER_PREFIX = re.compile(
    r"-?(?:(?:0|[1-9][0-9]*)(?:\.(?:[0-9]+(?:[eE][+-]?[0-9]*)?)?|[eE][+-]?[0-9]*)?)?\Z"
)
_HEX = frozenset("0123456789abcdefABCDEF")
_LITERALS = ("true", "false", "null")
MAX_DEPTH = 128


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


#: Strict like the scanner: no NaN/Infinity, no control characters in strings.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


@dataclass(slots=True, eq=False)
class Node:
    """One JSON value of the text: ``text[start:end]``; ``end`` is -1 while it is open."""

    kind: Kind
    start: int
    end: int = -1
    members: list[Member] = field(default_factory=list)  # objects
    items: list[Node] = field(default_factory=list)  # arrays

    @property
    def complete(self) -> bool:
        return self.end >= 0

    def decoded(self, text: str) -> Any:
        """The value of a complete node (the text it was scanned from must be passed)."""
        return json.loads(text[self.start : self.end])

    def member(self, key: str) -> Node | None:
        """The value of the first member named ``key`` that has begun, if any."""
        for item in self.members:
            if item.key == key and item.value is not None:
                return item.value
        return None


@dataclass(slots=True, eq=False)
class Member:
    """An object member: ``key`` is None until the key string is complete."""

    key: str | None = None
    value: Node | None = None


@dataclass(frozen=True, slots=True)
class JsonScan:
    """What :func:`scan_json` found from a start position.

    ``root`` is None when the text ended (or went wrong) before any value began. ``error`` is
    the position of the first character that cannot continue JSON, or None.
    """

    root: Node | None
    error: int | None

    @property
    def complete(self) -> bool:
        return self.error is None and self.root is not None and self.root.complete


class _End(Exception):
    """The text ended inside a value."""


class _Bad(Exception):
    def __init__(self, pos: int) -> None:
        super().__init__(pos)
        self.pos = pos


class _Scanner:
    __slots__ = ("detail", "max_depth", "n", "text")

    def __init__(self, text: str, max_depth: int, detail: int) -> None:
        self.text = text
        self.n = len(text)
        self.max_depth = max_depth
        self.detail = detail

    def skip(self, pos: int) -> int:
        end = _WS.match(self.text, pos)
        pos = end.end() if end else pos
        if pos >= self.n:
            raise _End
        return pos

    def open(self, pos: int) -> Node:
        """The node of the value starting at ``pos`` (after whitespace), not yet scanned."""
        pos = self.skip(pos)
        char = self.text[pos]
        if char == "{":
            return Node("object", pos)
        if char == "[":
            return Node("array", pos)
        if char == '"':
            return Node("string", pos)
        if char == "-" or "0" <= char <= "9":
            return Node("number", pos)
        if char in "tfn":
            return Node("literal", pos)
        raise _Bad(pos)

    def fill(self, node: Node, depth: int) -> int:
        """Scan ``node`` to its end; children are attached before they are scanned."""
        if depth > self.detail and node.kind in ("object", "array"):
            try:
                _, end = _DECODER.raw_decode(self.text, node.start)
            except (ValueError, RecursionError):
                pass  # open or invalid: scanned by hand, to know which and where
            else:
                node.end = end
                return end
        if node.kind == "object":
            end = self._object(node, depth)
        elif node.kind == "array":
            end = self._array(node, depth)
        elif node.kind == "string":
            end = self._string(node.start)
        elif node.kind == "number":
            end = self._number(node.start)
        else:
            end = self._literal(node.start)
        node.end = end
        return end

    def _object(self, node: Node, depth: int) -> int:
        if depth >= self.max_depth:
            raise _Bad(node.start)
        text = self.text
        pos = self.skip(node.start + 1)
        if text[pos] == "}":
            return pos + 1
        while True:
            if text[pos] != '"':
                raise _Bad(pos)
            member = Member()
            node.members.append(member)
            key_end = self._string(pos)
            member.key = json.loads(text[pos:key_end])
            pos = self.skip(key_end)
            if text[pos] != ":":
                raise _Bad(pos)
            child = self.open(pos + 1)
            member.value = child
            pos = self.skip(self.fill(child, depth + 1))
            if text[pos] == "}":
                return pos + 1
            if text[pos] != ",":
                raise _Bad(pos)
            pos = self.skip(pos + 1)

    def _array(self, node: Node, depth: int) -> int:
        if depth >= self.max_depth:
            raise _Bad(node.start)
        text = self.text
        pos = self.skip(node.start + 1)
        if text[pos] == "]":
            return pos + 1
        while True:
            child = self.open(pos)
            node.items.append(child)
            pos = self.skip(self.fill(child, depth + 1))
            if text[pos] == "]":
                return pos + 1
            if text[pos] != ",":
                raise _Bad(pos)
            pos = self.skip(pos + 1)

    def _string(self, pos: int) -> int:
        body = _STRING_BODY.match(self.text, pos + 1)
        end = body.end() if body else pos + 1
        if end >= self.n:
            raise _End
        if self.text[end] == '"':
            return end + 1
        if _CUT_ESCAPE.match(self.text, end):
            raise _End
        if self.text[end] != "\\":
            raise _Bad(end)  # a control character
        bad = end + 1  # a backslash: the escape goes wrong after it
        if self.text[bad] == "u":
            bad += 1
            while self.text[bad] in _HEX:
                bad += 1
        raise _Bad(bad)

    def _number(self, pos: int) -> int:
        if _NUMBER_PREFIX.match(self.text, pos):
            raise _End  # the number runs to the end of the text: it may go on
        match = _NUMBER.match(self.text, pos)
        if match is None:
            raise _Bad(pos + 1 if self.text[pos] == "-" else pos)
        return match.end()

    def _literal(self, pos: int) -> int:
        text = self.text
        for word in _LITERALS:
            if text.startswith(word, pos):
                return pos + len(word)
        for word in _LITERALS:
            tail = text[pos : pos + len(word)]
            if pos + len(tail) == self.n and word.startswith(tail):
                raise _End
        for word in _LITERALS:
            if word[0] == text[pos]:
                offset = 1
                while pos + offset < self.n and text[pos + offset] == word[offset]:
                    offset += 1
                raise _Bad(pos + offset)
        raise _Bad(pos)


def scan_json(
    text: str, pos: int = 0, *, max_depth: int = MAX_DEPTH, detail: int = MAX_DEPTH
) -> JsonScan:
    """Scan the JSON value that starts at ``pos`` (after optional whitespace) of ``text``.

    Members and items are recorded for containers at most ``detail`` levels deep (the root
    is level 0; -1 records none); deeper complete containers have only their extent. Nesting
    deeper than ``max_depth`` counts as an error, so a hostile answer cannot exhaust the stack.
    """
    scanner = _Scanner(text, max_depth, detail)
    root: Node | None = None
    try:
        root = scanner.open(pos)
        scanner.fill(root, 0)
    except _End:
        return JsonScan(root, None)
    except _Bad as bad:
        return JsonScan(root, bad.pos)
    return JsonScan(root, None)


class GrowingText:
    """An answer's text as it grows: deltas are kept as parts and joined only when read, so a
    non-streamed choice, which reads it once at the end, never re-joins on every poll."""

    __slots__ = ("_parts", "_text")

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._text = ""

    def append(self, delta: str) -> None:
        self._parts.append(delta)

    @property
    def value(self) -> str:
        if self._parts:
            self._text += "".join(self._parts)
            self._parts.clear()
        return self._text
