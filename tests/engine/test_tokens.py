from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.engine.tokens import MAX_TOKEN_CHARS, TokenCounter, count_tokens, truncate_to_tokens

# Text rich in the boundaries the method cares about: letter runs, digits, spaces next to
# words and to other spaces, other whitespace, punctuation, underscores, CJK, emoji.
_ALPHABET = "ab1 _.\n\t\u00e9\u4f60\U0001f600"
texts = st.text(alphabet=_ALPHABET, max_size=80) | st.text(max_size=40)


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("", 0),
        ("a", 1),
        ("Hello", 2),  # "Hell" "o"
        ("Hell", 1),
        (" world", 2),  # " worl" "d"
        ("Hello, world!", 6),  # "Hell" "o" "," " worl" "d" "!"
        ("a b", 2),  # "a" " b": a single space joins the next token
        ("a  b", 3),  # "a" "  " "b": a longer run stands alone
        ("a\nb", 3),
        ("\n\n\n", 1),
        (" ", 1),
        (" " * MAX_TOKEN_CHARS, 1),
        (" " * (MAX_TOKEN_CHARS + 1), 2),
        ("1234567", 2),
        ("snake_case", 4),  # "snak" "e" "_" "case"
        ("x = 1;", 4),  # "x" " =" " 1" ";"
        ("\u00e9t\u00e9", 1),  # letters beyond ASCII are letters
        ("\u4f60\u597d\u4e16\u754c", 4),  # one token per CJK character
        ("\u3053\u3093\u306b\u3061\u306f", 5),
        ("\U0001f600\U0001f600", 2),
    ],
)
def test_count_tokens(text: str, tokens: int) -> None:
    assert count_tokens(text) == tokens


def test_truncate_examples() -> None:
    assert truncate_to_tokens("Hello, world!", 0) == ""
    assert truncate_to_tokens("Hello, world!", -3) == ""
    assert truncate_to_tokens("Hello, world!", 1) == "Hell"
    assert truncate_to_tokens("Hello, world!", 3) == "Hello,"
    assert truncate_to_tokens("Hello, world!", 4) == "Hello, worl"
    assert truncate_to_tokens("Hello, world!", 6) == "Hello, world!"
    assert truncate_to_tokens("Hello, world!", 100) == "Hello, world!"


def test_truncate_long_text_uses_only_a_window() -> None:
    text = "word " * 100_000
    assert truncate_to_tokens(text, 3) == "word word word"
    assert count_tokens(truncate_to_tokens(text, 3)) == 3


def test_counter_examples() -> None:
    counter = TokenCounter()
    assert counter.total == 0
    assert counter.feed("") == 0
    assert counter.feed("Hel") == 1
    assert counter.feed("lo") == 2
    assert counter.feed(" ") == 3
    assert counter.feed("w") == 3  # the space joined "w"
    assert counter.feed("") == 3
    assert counter.total == 3


def test_counter_keeps_only_a_short_tail() -> None:
    # What makes feeding O(len(delta)): only the last token is kept for re-scanning.
    counter = TokenCounter()
    for _ in range(200):
        counter.feed("lorem ipsum  \n\n")
        assert len(counter._tail) <= MAX_TOKEN_CHARS
    assert counter.total == count_tokens("lorem ipsum  \n\n" * 200)


@settings(max_examples=300)
@given(text=texts, cuts=st.lists(st.integers(min_value=0, max_value=80), max_size=10))
def test_counter_matches_count_at_every_step(text: str, cuts: list[int]) -> None:
    counter = TokenCounter()
    points = sorted({min(c, len(text)) for c in cuts} | {len(text)})
    previous = 0
    for point in points:
        assert counter.feed(text[previous:point]) == count_tokens(text[:point])
        previous = point
    assert counter.total == count_tokens(text)


@settings(max_examples=300)
@given(text=texts, limit=st.integers(min_value=0, max_value=40))
def test_truncate_is_a_token_boundary_prefix(text: str, limit: int) -> None:
    cut = truncate_to_tokens(text, limit)
    assert text.startswith(cut)
    assert count_tokens(cut) == min(limit, count_tokens(text))
    # No partial token: the next limit's cut extends this one by whole tokens only.
    longer = truncate_to_tokens(text, limit + 1)
    assert longer.startswith(cut)
    if cut != text:
        assert len(longer) > len(cut)


@settings(max_examples=300)
@given(head=texts, tail=texts)
def test_appending_never_changes_earlier_tokens(head: str, tail: str) -> None:
    # The property ChoiceText relies on: text counted as N tokens stays within the first N
    # tokens of any continuation (the last token may only grow).
    n = count_tokens(head)
    assert truncate_to_tokens(head + tail, n).startswith(head)
    assert count_tokens(head + tail) >= n


@given(text=texts)
def test_every_character_is_counted(text: str) -> None:
    assert truncate_to_tokens(text, len(text)) == text
    assert count_tokens(text) <= len(text)
    assert (count_tokens(text) == 0) == (text == "")
