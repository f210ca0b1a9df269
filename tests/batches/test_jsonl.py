"""Cutting an upload into lines as it streams: chunks end at line ends, caps bite at once."""

from __future__ import annotations

import pytest

from gateway.batches.jsonl import LineCutter, split_lines
from gateway.errors import BadRequest, PayloadTooLarge


def _cutter(**caps: int) -> LineCutter:
    options = {"max_bytes": 10_000, "max_lines": 100, "max_line_bytes": 1000, "chunk_bytes": 10}
    return LineCutter(**{**options, **caps})


def test_pieces_split_anywhere_come_out_as_whole_lines() -> None:
    cutter = _cutter()
    data = b'{"a": 1}\n\n{"b": "\xc3\xbc"}\n{"c": 3}'
    chunks = [c for i in range(len(data)) for c in cutter.feed(data[i : i + 1])]
    chunks += cutter.close()
    assert all(c.endswith("\n") for c in chunks)
    assert split_lines(chunks) == ['{"a": 1}', '{"b": "ü"}', '{"c": 3}']
    assert (cutter.lines, cutter.read, cutter.stored) == (3, len(data), len(data))


def test_caps_are_enforced_while_reading() -> None:
    with pytest.raises(PayloadTooLarge, match="max_lines"):
        _cutter(max_lines=2).feed(b"1\n2\n3\n")
    with pytest.raises(PayloadTooLarge, match="max_bytes"):
        _cutter(max_bytes=5).feed(b"123456")
    with pytest.raises(PayloadTooLarge, match="max_line_bytes"):
        _cutter(max_line_bytes=4).feed(b"12345")  # no newline yet: refused before the end
    with pytest.raises(BadRequest, match="UTF-8"):
        _cutter().feed(b"\xff\n")
