"""Request bodies: only strict JSON of the declared types gets through."""

from __future__ import annotations

import pytest

from gateway.errors import BadRequest, UnsupportedMediaType
from gateway.http.bodies import check_content_type, parse_json, validate
from gateway.openai.protocol import ChatCompletionRequest

USER = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    "value",
    [None, "", "application/json", "Application/JSON; charset=utf-8", "application/vnd.x+json"],
)
def test_json_or_no_content_type_is_accepted(value: str | None) -> None:
    check_content_type(value)


@pytest.mark.parametrize(
    "value", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=a"]
)
def test_other_content_types_are_415(value: str) -> None:
    with pytest.raises(UnsupportedMediaType) as info:
        check_content_type(value)
    assert info.value.status_code == 415 and "application/json" in info.value.message


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b'{"a": NaN}', "NaN"),
        (b'{"a": -Infinity}', "Infinity"),
        (b'{"a": 1e400}', "too large"),
        (b'{"a": "\\ud800"}', "surrogate"),
        (b'{"\\udfff": 1}', "surrogate"),
        (b'{"a": "\xff"}', "UTF-8"),
        (b"  ", "empty"),
        (b"[]", "JSON object"),
        (b'{"a": ' + b"[" * 40 + b"]" * 40 + b"}", "nested deeper than 32"),
        (b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested deeper than 32"),
    ],
)
def test_what_is_not_strict_json_is_a_400(raw: bytes, words: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_json(raw, 32)
    assert words in info.value.message


def test_valid_unicode_and_a_bom_are_fine() -> None:
    assert parse_json(b'\xef\xbb\xbf{"a": "\\ud83d\\ude00 caf\xc3\xa9"}', 32) == {"a": "😀 café"}
    depth_32 = b'{"a": ' + b"[" * 30 + b"]" * 30 + b"}"
    assert parse_json(depth_32, 32)


@pytest.mark.parametrize(
    ("field", "value", "param"),
    [
        ("stream", "yes", "stream"),
        ("stream", 1, "stream"),
        ("n", "2", "n"),
        ("n", 2.0, "n"),
        ("max_tokens", True, "max_tokens"),
        ("model", 5, "model"),
    ],
)
def test_types_are_not_coerced(field: str, value: object, param: str) -> None:
    with pytest.raises(BadRequest) as info:
        validate(ChatCompletionRequest, {"model": "m", "messages": USER, field: value})
    assert info.value.param == param


def test_a_valid_body_validates_with_nested_models() -> None:
    request = validate(
        ChatCompletionRequest,
        {
            "model": "m",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
            "stream": True,
            "stream_options": {"include_usage": True},
            "stop": ["a", "b"],
            "temperature": 0.2,
        },
    )
    assert request.stream and request.stream_options and request.stream_options.include_usage
    assert request.stop_list() == ["a", "b"]
