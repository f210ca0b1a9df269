"""Clients send anything: every malformed request gets a clear 4xx in OpenAI's error shape.

Against the session's real gateway (none of these requests reaches the upstream).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.servers import ALICE_KEY, Server

CHAT = "/v1/chat/completions"
USER = [{"role": "user", "content": "hi"}]
JSON = {"authorization": f"Bearer {ALICE_KEY}", "content-type": "application/json"}


def _chat(**fields: Any) -> bytes:
    return json.dumps({"model": "gemma-2b", "messages": USER, **fields}).encode()


def _check(
    answer: httpx.Response, status: int, error_type: str = "invalid_request_error"
) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.headers["x-request-id"]
    error: dict[str, Any] = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == error_type
    assert isinstance(error["message"], str) and len(error["message"]) > 10
    return error


BODIES: dict[str, tuple[bytes, int, str | None, str]] = {
    # name: (body, status, param, words in the message)
    "not JSON": (b"{'model': 1}", 400, None, "not valid JSON"),
    "empty body": (b"", 400, None, "empty"),
    "not an object": (b"[1, 2]", 400, None, "JSON object"),
    "invalid UTF-8": (b'{"model": "gemma-2b", "messages": "\xff\xfe"}', 400, None, "UTF-8"),
    "lone surrogate": (
        _chat(messages=[{"role": "user", "content": "\ud800"}]),
        400,
        None,
        "surrogate",
    ),
    "NaN": (b'{"model": "gemma-2b", "messages": [], "temperature": NaN}', 400, None, "NaN"),
    "huge number": (b'{"model": "gemma-2b", "n": 1e999}', 400, None, "too large"),
    "too deep": (
        b'{"model": "gemma-2b", "metadata": ' + b"[" * 64 + b"]" * 64 + b"}",
        400,
        None,
        "nested deeper",
    ),
    "very deep": (b'{"a": ' + b"[" * 200_000 + b"]" * 200_000 + b"}", 400, None, "nested deeper"),
    "model not a string": (_chat(model=5), 400, "model", "string"),
    "stream not a boolean": (_chat(stream="yes"), 400, "stream", "boolean"),
    "n as a string": (_chat(n="2"), 400, "n", "integer"),
    "max_tokens as a float": (_chat(max_tokens=1.5), 400, "max_tokens", "integer"),
    "messages not a list": (_chat(messages="hi"), 400, "messages", "array"),
    "content an object": (
        _chat(messages=[{"role": "user", "content": {"text": "hi"}}]),
        400,
        "messages[0].content",
        "",
    ),
    "stop of numbers": (_chat(stop=[1, 2]), 400, "stop", ""),
    "no messages": (_chat(messages=[]), 400, "messages", "at least 1"),
    "missing messages": (json.dumps({"model": "gemma-2b"}).encode(), 400, "messages", "required"),
    "too many messages": (_chat(messages=USER * 1001), 400, "messages", "At most 1000"),
    "prompt too long": (
        _chat(messages=[{"role": "user", "content": "word " * 90_000}]),
        400,
        "messages",
        "limit",
    ),
    "invalid role": (
        _chat(messages=[{"role": "wizard", "content": "hi"}]),
        400,
        "messages[0].role",
        "'user'",
    ),
    "missing role": (_chat(messages=[{"content": "hi"}]), 400, "messages[0].role", "required"),
    "huge n": (_chat(n=10**30), 400, "n", "at most"),
    "zero n": (_chat(n=0), 400, "n", "greater than or equal to 1"),
    "huge max_tokens": (_chat(max_tokens=10**12), 400, "max_tokens", "at most"),
    "zero max_tokens": (_chat(max_tokens=0), 400, "max_tokens", "greater than or equal to 1"),
    "image content": (
        _chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]),
        400,
        "messages[0].content[0]",
        "text",
    ),
}


@pytest.mark.parametrize("name", list(BODIES))
def test_a_bad_body_is_a_clear_400(gateway: Server, name: str) -> None:
    body, status, param, words = BODIES[name]
    answer = httpx.post(gateway.url + CHAT, content=body, headers=JSON, timeout=30)
    error = _check(answer, status)
    assert error["param"] == param
    assert words in error["message"]


@pytest.mark.parametrize(
    ("prompt", "param"),
    [([[1, 2, 3]], "prompt"), ([], "prompt"), (5, "prompt"), ([None], "prompt")],
)
def test_bad_prompts_for_text_completions(gateway: Server, prompt: Any, param: str) -> None:
    body = json.dumps({"model": "gemma-2b", "prompt": prompt}).encode()
    answer = httpx.post(gateway.url + "/v1/completions", content=body, headers=JSON, timeout=30)
    assert _check(answer, 400)["param"] == param


def _chunks(size: int) -> Iterator[bytes]:
    yield b'{"model": "gemma-2b", "messages": [{"role": "user", "content": "'
    for _ in range(size // 65536):
        yield b"a" * 65536
    yield b'"}]}'


def test_a_body_over_the_limit_is_413_declared_or_not(gateway: Server) -> None:
    big = b"".join(_chunks(2 * 1024 * 1024))
    declared = httpx.post(gateway.url + CHAT, content=big, headers=JSON, timeout=30)
    assert _check(declared, 413)["code"] == "request_too_large"
    # Chunked, without a Content-Length: refused once the limit is crossed.
    chunked = httpx.post(gateway.url + CHAT, content=_chunks(2 * 1024 * 1024), headers=JSON)
    assert "transfer-encoding" not in declared.request.headers
    assert chunked.request.headers["transfer-encoding"] == "chunked"
    assert _check(chunked, 413)["code"] == "request_too_large"


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
def test_a_body_that_is_not_sent_as_json_is_415(gateway: Server, content_type: str) -> None:
    headers = {**JSON, "content-type": content_type}
    answer = httpx.post(gateway.url + CHAT, content=_chat(), headers=headers, timeout=30)
    error = _check(answer, 415)
    assert error["code"] == "unsupported_media_type" and "application/json" in error["message"]


def test_json_with_a_charset_or_no_content_type_is_fine(gateway: Server) -> None:
    body = _chat(max_tokens=1, messages=[{"role": "user", "content": "[[emulate:words 1]]"}])
    for headers in (
        {**JSON, "content-type": "application/json; charset=utf-8"},
        {"authorization": JSON["authorization"]},
    ):
        answer = httpx.post(gateway.url + CHAT, content=body, headers=headers, timeout=30)
        assert answer.status_code == 200, answer.text


@pytest.mark.parametrize(
    ("headers", "status", "error_type", "code"),
    [
        (
            [("authorization", f"Bearer {ALICE_KEY}")] * 2,
            400,
            "invalid_request_error",
            "duplicate_header",
        ),
        (
            [("authorization", "Bearer wrong"), ("authorization", f"Bearer {ALICE_KEY}")],
            400,
            "invalid_request_error",
            "duplicate_header",
        ),
        (
            [("content-type", "application/json")] * 2,
            400,
            "invalid_request_error",
            "duplicate_header",
        ),
        (
            [(b"authorization", b"Bearer sk-\xe9\xff")],
            401,
            "invalid_request_error",
            "invalid_api_key",
        ),
        (
            [("authorization", f"Basic {ALICE_KEY}")],
            401,
            "invalid_request_error",
            "missing_api_key",
        ),
        ([("authorization", "Bearer")], 401, "invalid_request_error", "missing_api_key"),
        ([], 401, "invalid_request_error", "missing_api_key"),
    ],
    ids=[
        "auth-twice",
        "auth-conflict",
        "content-type-twice",
        "non-ascii-key",
        "basic",
        "empty",
        "none",
    ],
)
def test_odd_headers_get_a_clear_4xx(
    gateway: Server, headers: list[Any], status: int, error_type: str, code: str
) -> None:
    answer = httpx.post(gateway.url + CHAT, content=_chat(), headers=headers, timeout=30)
    assert _check(answer, status, error_type)["code"] == code


def test_non_ascii_in_other_headers_is_harmless(gateway: Server) -> None:
    headers = [
        *((k.encode(), v.encode()) for k, v in JSON.items()),
        (b"x-request-id", b"\xe9\xe9"),
        (b"x-stainless-timeout", b"\xe9"),
        (b"user-agent", b"caf\xe9"),
    ]
    answer = httpx.post(gateway.url + CHAT, content=_chat(n=99), headers=headers, timeout=30)
    assert _check(answer, 400)["param"] == "n"
    assert answer.headers["x-request-id"].startswith("req_")  # a fresh id, not the odd one


def test_a_wrong_method_is_405_and_an_unknown_route_404(gateway: Server) -> None:
    wrong = httpx.get(gateway.url + CHAT, headers=JSON)
    assert _check(wrong, 405)["code"] == "method_not_allowed"
    assert wrong.headers["allow"] == "POST"
    unknown = httpx.post(gateway.url + "/v1/embeddings", content=b"{}", headers=JSON)
    assert _check(unknown, 404)["code"] == "unsupported_endpoint"


def test_the_openapi_document_is_served(gateway: Server) -> None:
    doc = httpx.get(gateway.url + "/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    assert {"/v1/chat/completions", "/v1/completions", "/v1/models"} <= set(doc["paths"])
