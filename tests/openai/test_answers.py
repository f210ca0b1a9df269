"""SSE text events cut from a template are the very bytes the full chunk would encode to."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.http.sse import encode as sse
from gateway.openai.answers import AnswerShape


def _same(shape: AnswerShape, index: int, text: str) -> None:
    try:
        expected: bytes | type[Exception] = sse(shape.chunk(index, text))
    except UnicodeEncodeError as exc:  # neither path may fail differently from the other
        expected = type(exc)
    try:
        got: bytes | type[Exception] = shape.text_event(index, text)
    except UnicodeEncodeError as exc:
        got = type(exc)
    assert got == expected


@pytest.mark.parametrize("kind", ["chat", "text"])
@pytest.mark.parametrize(
    "text",
    [
        "hi",
        "",
        'quote " back \\ slash',
        "\n\t\x01\x7f",
        "ünï ☃ 𝄞",
        "\u2028",
        "\ud800",
        "\x00gateway-text\x00",
    ],
)
def test_text_events_match_the_full_chunk(kind: str, text: str) -> None:
    shape = AnswerShape(kind, 'model "with" quotes', "fp_1")
    for index in (0, 1, 7):
        _same(shape, index, text)


@given(st.text(), st.integers(min_value=0, max_value=127), st.sampled_from(["chat", "text"]))
def test_any_text_encodes_the_same_both_ways(text: str, index: int, kind: str) -> None:
    _same(AnswerShape(kind, "gemma:2b", "fp_2"), index, text)
