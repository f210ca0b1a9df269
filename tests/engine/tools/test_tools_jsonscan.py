from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.engine.tools.jsonscan import scan_json

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
JSON_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
CONTAINERS = st.lists(JSON_VALUES, max_size=4) | st.dictionaries(
    st.text(max_size=6), JSON_VALUES, max_size=4
)


@settings(max_examples=150, deadline=None)
@given(CONTAINERS, st.sampled_from([None, 2]), st.booleans())
def test_a_json_text_is_complete_and_every_prefix_is_valid_but_open(
    value: object, indent: int | None, ascii_only: bool
) -> None:
    text = json.dumps(value, indent=indent, ensure_ascii=ascii_only)
    whole = scan_json(text + " tail")
    assert whole.complete and whole.root is not None and whole.root.end == len(text)
    for cut in range(1, len(text)):
        part = scan_json(text[:cut])
        assert part.error is None, (text, cut)
        assert part.root is not None and not part.root.complete


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet='{}[]",:0123456789.-+eEtrufalsn \\u', max_size=24))
def test_the_error_is_where_json_stops_being_possible(text: str) -> None:
    text = "{" + text
    found = scan_json(text)
    if found.error is None:
        if found.complete:
            assert found.root is not None
            json.loads(text[: found.root.end])
        return
    assert scan_json(text[: found.error]).error is None
    with pytest.raises(ValueError):
        json.loads(text[: found.error + 1])


@settings(max_examples=200, deadline=None)
@given(
    CONTAINERS,
    st.integers(0, 400),
    st.sampled_from(
        ["", "x", "]", "}", ",", " NaN", "\\q", '"\n'],
    ),
    st.integers(-1, 3),
)
def test_less_detail_decides_the_same(value: object, cut: int, junk: str, detail: int) -> None:
    text = json.dumps(value)
    text = text[:cut] + junk + text[cut:]
    full, fast = scan_json(text), scan_json(text, detail=detail)
    assert (full.error, full.complete) == (fast.error, fast.complete)
    if full.root is not None and fast.root is not None:
        assert (full.root.start, full.root.end) == (fast.root.start, fast.root.end)


def test_non_json_constants_are_refused_on_every_path() -> None:
    for detail in (-1, 0, 128):
        assert scan_json('{"a": [NaN]}', detail=detail).error == 7
        assert scan_json('{"a": [-Infinity]}', detail=detail).error == 8


def test_positions_of_members_and_items() -> None:
    text = 'say {"name": "f", "arguments": {"a": [1, true]}} then'
    found = scan_json(text, 4)
    root = found.root
    assert found.complete and root is not None
    assert text[root.start : root.end] == '{"name": "f", "arguments": {"a": [1, true]}}'
    arguments = root.member("arguments")
    assert arguments is not None and arguments.decoded(text) == {"a": [1, True]}
    name = root.member("name")
    assert name is not None and name.decoded(text) == "f"
    assert root.member("missing") is None


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("{x", 1),
        ('{"a" 1}', 5),
        ('{"a": tru}', 9),
        ('{"a": 01}', 7),
        ('{"a": 1,}', 8),
        ('{"a": "\\q"}', 8),
        ('{"a": "line\nbreak"}', 11),
        ("[1 2]", 3),
        ('{"a": -}', 7),
    ],
)
def test_invalid_json_reports_the_first_bad_character(text: str, error: int) -> None:
    assert scan_json(text).error == error


@pytest.mark.parametrize("text", ['{"a": "\\u12', '{"a": "\\', '{"a": 1.', '{"a": 1e', '{"a": fa'])
def test_a_cut_escape_number_or_literal_is_open_not_invalid(text: str) -> None:
    found = scan_json(text)
    assert found.error is None and not found.complete


def test_open_values_keep_what_began() -> None:
    text = '{"name": "get_weather", "arguments": {"city": "Pa'
    root = scan_json(text).root
    assert root is not None and not root.complete
    name = root.member("name")
    assert name is not None and name.complete
    arguments = root.member("arguments")
    assert arguments is not None and not arguments.complete and arguments.start == 37


def test_nesting_beyond_the_limit_is_an_error_not_a_crash() -> None:
    text = "[" * 5000 + "]" * 5000
    assert scan_json(text).error is not None
    assert scan_json("[[[]]]", max_depth=2).error is not None
    assert scan_json("[[[]]]", max_depth=3).complete


def test_nothing_to_scan() -> None:
    assert scan_json("   ").root is None
    assert scan_json("  x").error == 2
