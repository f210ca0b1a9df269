"""Server-sent events, framed one way for every door.

Each door names its events differently (OpenAI's chat streams send bare ``data:`` lines, the
Responses API and Anthropic an ``event:`` line too), but the framing, the JSON encoding and its
edge cases are the same, so they are written once here: compact JSON, UTF-8 as is, and a
string holding a lone surrogate (which orjson refuses) escaped rather than failing the stream.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(obj: Any) -> bytes:
    """``obj`` as compact JSON bytes (orjson: this is the hot path of every stream)."""
    try:
        return orjson.dumps(obj)
    except (orjson.JSONEncodeError, TypeError):  # lone surrogates, big ints: still valid JSON
        return json.dumps(obj, separators=(",", ":")).encode()


def frame(data: bytes, event: str | None = None) -> bytes:
    """One event whose ``data`` line is ``data`` as given (say ``[DONE]``)."""
    head = b"event: " + event.encode() + b"\n" if event is not None else b""
    return head + b"data: " + data + b"\n\n"


def encode(obj: Any, event: str | None = None) -> bytes:
    """One event carrying ``obj`` as JSON, named ``event`` when the door names its events."""
    return frame(dumps(obj), event)


def comment(text: str) -> bytes:
    """A comment line: clients ignore it, proxies see bytes (a keep-alive)."""
    return b": " + text.encode() + b"\n\n"
