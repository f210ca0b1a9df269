from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.emulator.directives import render_json
from gateway.engine.tools import JsonSpec, JsonStream, extract_json
from tests.engine.tools.tools_support import spec, splits

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
ADA = {"name": "Ada", "age": 36}


def schema_spec(schema: dict[str, Any] = PERSON) -> JsonSpec:
    found = spec(
        response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": schema}}
    )
    assert found.json is not None
    return found.json


def object_spec() -> JsonSpec:
    found = spec(response_format={"type": "json_object"}).json
    assert found is not None
    return found


@pytest.mark.parametrize("style", ["plain", "fenced", "prose"])
def test_the_json_is_cut_out_of_fences_and_prose(style: str) -> None:
    text = render_json(ADA, style)  # type: ignore[arg-type]
    _, value_text, problem = extract_json(text, schema_spec())
    assert problem is None and json.loads(value_text) == ADA
    assert not value_text.startswith("`") and value_text.endswith("}")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("I cannot help with that.", "holds no JSON"),
        ('{"name": "Ada", "age": ', "invalid or incomplete"),
        (render_json(ADA, "invalid"), "invalid or incomplete"),
        ('{"name": "Ada"}', "'age' is a required property"),
        ('{"name": "Ada", "age": "old"}', "at age: 'old' is not of type 'integer'"),
        ('{"name": "Ada", "age": 1, "x": 0}', "Additional properties"),
    ],
)
def test_answers_that_do_not_fit_the_schema(text: str, problem: str) -> None:
    found = extract_json(text, schema_spec())[2]
    assert found is not None and problem in found


def test_json_object_wants_an_object() -> None:
    assert extract_json('Here: {"any": [1]}', object_spec())[1:] == ('{"any": [1]}', None)
    assert extract_json("[1, 2]", object_spec())[2] is not None


def test_an_array_schema_takes_an_array() -> None:
    array = schema_spec({"type": "array", "items": {"type": "integer"}})
    assert extract_json("Numbers: [1, 2, 3].", array)[1:] == ("[1, 2, 3]", None)


def test_braces_in_prose_before_the_json_are_passed_over() -> None:
    text = 'Use {braces} or { x} carefully: {"name": "Ada", "age": 36}'
    start, value_text, problem = extract_json(text, schema_spec())
    assert problem is None and value_text == '{"name": "Ada", "age": 36}' and start == 32


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["plain", "fenced", "prose", "invalid"]),
    st.dictionaries(st.sampled_from(["name", "age", "x"]), st.integers() | st.text(max_size=5)),
    st.lists(st.integers(0, 200), max_size=10),
)
def test_a_streamed_json_answer_is_the_non_streamed_one(
    style: str, value: dict[str, Any], cuts: list[int]
) -> None:
    text = render_json(value, style)  # type: ignore[arg-type]
    json_spec = schema_spec()
    stream = JsonStream(json_spec)
    sent = "".join(stream.feed(part) for part in splits(text, cuts))
    rest, problem = stream.finish()
    _, whole, whole_problem = extract_json(text, json_spec)
    assert sent + rest == whole
    assert problem == whole_problem


def test_json_streams_as_it_arrives() -> None:
    stream = JsonStream(schema_spec())
    assert stream.feed("Here it is:\n```json\n") == ""
    assert stream.feed('{"name": "A') == '{"name": "A'
    assert stream.feed('da", "age": 36}\n```\nAnything else?') == 'da", "age": 36}'
    assert stream.finish() == ("", None)


def test_a_buffered_stream_sends_everything_at_the_end() -> None:
    stream = JsonStream(object_spec(), streaming=False)
    assert stream.feed('ok {"a": 1} bye') == ""
    assert stream.finish() == ('{"a": 1}', None)
    assert stream.emitted
