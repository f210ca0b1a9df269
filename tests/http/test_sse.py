"""One SSE encoder for every door: the frames each door's clients parse."""

from __future__ import annotations

import json

from gateway.http.sse import comment, encode, frame


def test_a_bare_data_event_as_openai_chat_streams_send_it() -> None:
    assert encode({"a": "ü ☃", "n": None}) == 'data: {"a":"ü ☃","n":null}\n\n'.encode()


def test_a_named_event_as_anthropic_and_the_responses_api_send_it() -> None:
    assert encode({"type": "ping"}, "ping") == b'event: ping\ndata: {"type":"ping"}\n\n'


def test_raw_data_and_comments() -> None:
    assert frame(b"[DONE]") == b"data: [DONE]\n\n"
    assert comment("ping") == b": ping\n\n"


def test_a_lone_surrogate_is_escaped_not_a_failed_stream() -> None:
    out = encode({"text": "a\ud800b"}, "delta")
    head, data = out.decode("ascii").removesuffix("\n\n").split("\n")
    assert head == "event: delta"
    assert json.loads(data.removeprefix("data: ")) == {"text": "a\ud800b"}


def test_integers_beyond_64_bits_are_still_json() -> None:
    assert encode({"n": 2**70}) == b'data: {"n":1180591620717411303424}\n\n'
