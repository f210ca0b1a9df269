"""What the leading process writes on a Redis stream reads back as it was sent (no Redis here:
the encoding alone; tests/upstream/test_relay.py runs the relay itself against Redis)."""

from __future__ import annotations

import json

from gateway.upstream.models import parse_json
from gateway.upstream.relay import encode_entry


def _entry(text: str) -> list[list[object]]:
    return [["job-1", "pending", "running", 12, text, "running", 3.5, None]]


def test_an_entry_reads_back_as_sent() -> None:
    for text in ("Hello, world", 'quotes " and \\ and\nnew lines', "ünïcödé 漢字 🙂", ""):
        entry = _entry(text)
        assert parse_json(encode_entry(entry)) == entry


def test_text_with_a_lone_surrogate_still_goes_through() -> None:
    # json.loads turns "\ud800" into a lone surrogate, which orjson will not encode.
    text = json.loads('"before \\ud800 after"')
    entry = _entry(text)
    encoded = encode_entry(entry)
    assert parse_json(encoded) == entry
