"""The Messages door's answers and stream events, checked against the anthropic SDK's types."""

from __future__ import annotations

import json
from typing import Any

import pytest
from anthropic.types import Message, RawMessageStreamEvent
from pydantic import TypeAdapter

from gateway.anthropic.answers import MessageCodec, render_message, stop_reason, tool_use_id
from gateway.engine.answer import Answer, ChoiceAnswer
from gateway.engine.conversation import ToolCall
from gateway.engine.events import (
    KEEPALIVE,
    ChoiceEnd,
    ChoiceReset,
    Event,
    TextDelta,
    ToolCallChunk,
    ToolCallDelta,
)
from gateway.errors import UpstreamError

EVENTS: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)


def parse_sse(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    """``(event name, data)`` per frame; every data validated as an SDK stream event."""
    out = []
    for frame in body.decode().split("\n\n"):
        if not frame:
            continue
        lines = dict(line.split(": ", 1) for line in frame.split("\n"))
        data = json.loads(lines["data"])
        assert data["type"] == lines["event"]
        if data["type"] not in ("ping", "error"):
            EVENTS.validate_python(data)
        out.append((lines["event"], data))
    return out


def encode(events: list[Event], prompt_tokens: int = 7, completion_tokens: int = 3) -> bytes:
    stream = MessageCodec("gemma-2b", prompt_tokens)
    body = stream.opening() + b"".join(stream.event(e) for e in events)
    return body + stream.closing(prompt_tokens, completion_tokens)


def test_a_text_answer_streams_as_one_text_block() -> None:
    frames = parse_sse(
        encode(
            [TextDelta(0, "Hello"), TextDelta(0, ""), TextDelta(0, " world"), ChoiceEnd(0, "stop")]
        )
    )
    names = [name for name, _ in frames]
    assert names == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = frames[0][1]["message"]
    assert start["id"].startswith("msg_") and start["usage"]["input_tokens"] == 7
    text = "".join(d["delta"]["text"] for n, d in frames if n == "content_block_delta")
    assert text == "Hello world"
    assert frames[5][1]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    usage = {"input_tokens": 7, "output_tokens": 3}
    assert frames[5][1]["usage"] == {
        **usage,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def test_tool_calls_stream_as_tool_use_blocks_with_partial_json() -> None:
    events: list[Event] = [
        TextDelta(0, "Let me look."),
        ToolCallDelta(0, ToolCallChunk(0, "call_abc", "get_weather", '{"ci')),
        ToolCallDelta(0, ToolCallChunk(0, None, None, 'ty": "Paris"}')),
        ToolCallDelta(0, ToolCallChunk(1, "call_def", "get_time", "")),
        ToolCallDelta(0, ToolCallChunk(1, None, None, "{}")),
        ChoiceEnd(0, "tool_calls"),
    ]
    frames = parse_sse(encode(events))
    starts = [d for n, d in frames if n == "content_block_start"]
    assert [s["index"] for s in starts] == [0, 1, 2]
    assert starts[1]["content_block"] == {
        "type": "tool_use",
        "id": "toolu_abc",
        "name": "get_weather",
        "input": {},
    }
    stops = [d["index"] for n, d in frames if n == "content_block_stop"]
    assert stops == [0, 1, 2]
    partial = "".join(
        d["delta"]["partial_json"]
        for n, d in frames
        if n == "content_block_delta" and d["index"] == 1
    )
    assert json.loads(partial) == {"city": "Paris"}
    assert frames[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_keepalives_are_pings_and_resets_send_nothing() -> None:
    frames = parse_sse(
        encode([KEEPALIVE, ChoiceReset(0), TextDelta(0, "x"), ChoiceEnd(0, "length")])
    )
    assert frames[1] == ("ping", {"type": "ping"})
    assert frames[-2][1]["delta"]["stop_reason"] == "max_tokens"


def test_an_empty_answer_has_no_blocks_and_a_stop_sequence_is_reported() -> None:
    frames = parse_sse(encode([ChoiceEnd(0, "stop", "END")]))
    assert [n for n, _ in frames] == ["message_start", "message_delta", "message_stop"]
    assert frames[1][1]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "END"}


def test_a_failure_after_the_start_is_an_error_event() -> None:
    stream = MessageCodec("gemma-2b", 1)
    frames = parse_sse(stream.opening() + stream.failure(UpstreamError("the job failed")))
    assert frames[-1] == (
        "error",
        {"type": "error", "error": {"type": "api_error", "message": "the job failed"}},
    )


def test_lone_surrogates_still_give_valid_json() -> None:
    stream = MessageCodec("m", 1)
    body = stream.event(TextDelta(0, "a\ud800b"))
    assert json.loads(body.decode().split("data: ")[-1])["delta"]["text"] == "a\ud800b"


def test_the_message_validates_as_the_sdks_message() -> None:
    answer = Answer(
        choices=[
            ChoiceAnswer(
                "Checking.",
                "tool_calls",
                None,
                [ToolCall("call_1", "get_weather", '{"city": "Paris"}')],
            )
        ],
        prompt_tokens=12,
        completion_tokens=5,
    )
    body = MessageCodec("gemma-2b", 12).render(answer)
    message = Message.model_validate(body)
    assert message.id.startswith("msg_")
    assert message.stop_reason == "tool_use"
    assert [b.type for b in message.content] == ["text", "tool_use"]
    tool = message.content[1]
    assert tool.type == "tool_use" and tool.id == "toolu_1" and tool.input == {"city": "Paris"}
    assert message.usage.input_tokens == 12 and message.usage.output_tokens == 5


def test_a_plain_answer_has_one_text_block() -> None:
    body = render_message(Answer(choices=[ChoiceAnswer("Hi", "stop")]), "m")
    assert Message.model_validate(body).content[0].type == "text"
    assert body["stop_reason"] == "end_turn" and body["stop_sequence"] is None


@pytest.mark.parametrize(
    ("reason", "stop", "expected"),
    [
        ("stop", None, "end_turn"),
        ("stop", "###", "stop_sequence"),
        ("length", None, "max_tokens"),
        ("tool_calls", None, "tool_use"),
        (None, None, "end_turn"),
    ],
)
def test_stop_reasons(reason: str | None, stop: str | None, expected: str) -> None:
    assert stop_reason(reason, stop) == expected


def test_tool_use_ids() -> None:
    assert tool_use_id("call_x1") == "toolu_x1"
    assert tool_use_id("toolu_x1") == "toolu_x1"
