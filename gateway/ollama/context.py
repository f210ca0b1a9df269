"""``context`` of ``/api/generate``: the conversation so far, as integers a client sends back.

Ollama returns the tokens of the exchange so a client can continue it with the next
``/api/generate``. The grid's tokens never reach the gateway, and its prompts are rendered
from turns, so here ``context`` carries the turns themselves: the Unicode code points of a
compact JSON array ``[["user", text], ["assistant", text], ...]``. A client treats it as
opaque, sends it back, and the next prompt is rendered after those turns. Anything else sent
as ``context`` is a 400 (it came from another server, or was changed).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from gateway.errors import BadRequest

ROLES = frozenset({"user", "assistant"})


def encode_context(turns: Sequence[tuple[str, str]]) -> list[int]:
    text = json.dumps([list(turn) for turn in turns], separators=(",", ":"), ensure_ascii=False)
    return [ord(c) for c in text]


def _invalid() -> BadRequest:
    return BadRequest(
        "context is not one this gateway returned: send back the 'context' of an earlier "
        "/api/generate answer unchanged, or none.",
        param="context",
    )


def decode_context(context: Sequence[int]) -> list[tuple[str, str]]:
    if not context:
        return []
    try:
        text = "".join(map(chr, context))
        text.encode("utf-8")  # no lone surrogates
        turns = json.loads(text)
    except (ValueError, OverflowError, UnicodeEncodeError, RecursionError):
        raise _invalid() from None
    if not isinstance(turns, list):
        raise _invalid()
    out: list[tuple[str, str]] = []
    for turn in turns:
        if (
            not isinstance(turn, list)
            or len(turn) != 2
            or turn[0] not in ROLES
            or not isinstance(turn[1], str)
        ):
            raise _invalid()
        out.append((turn[0], turn[1]))
    return out
