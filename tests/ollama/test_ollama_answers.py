"""The engine's events as Ollama's chunks and answers, and errors in Ollama's shape."""

from __future__ import annotations

import json

from gateway.engine.answer import Answer, ChoiceAnswer
from gateway.engine.conversation import ToolCall
from gateway.engine.events import KEEPALIVE, ChoiceEnd, ChoiceReset, TextDelta, ToolCallDelta
from gateway.engine.tools import ToolCallChunk
from gateway.errors import BadRequest, RateLimited, ServiceUnavailable
from gateway.http.exchange import Exchange
from gateway.ollama.answers import OllamaCodec
from gateway.ollama.errors import NotServed, error_response, status


def exchange() -> Exchange:
    ex = Exchange("req_1", "/api/chat")
    ex.started -= 1.0  # the request began a second ago
    ex.submitted_at = ex.started + 0.01
    ex.first_text_at = ex.started + 0.5
    ex.marks["generated"] = ex.started + 0.8
    return ex


def parse(data: bytes) -> list[dict[str, object]]:
    assert data.endswith(b"\n")
    return [json.loads(line) for line in data.decode().splitlines()]


def test_text_keepalive_and_resets() -> None:
    codec = OllamaCodec("chat", "gemma:2b", exchange())
    assert codec.media_type == "application/x-ndjson" and codec.opening() == b""
    [chunk] = parse(codec.event(TextDelta(0, 'he said "hi"')))
    assert chunk["message"] == {"role": "assistant", "content": 'he said "hi"'}
    assert chunk["done"] is False and chunk["model"] == "gemma:2b"
    [ping] = parse(codec.event(KEEPALIVE))  # valid JSON, no text: every client reads nothing
    assert ping["message"] == {"role": "assistant", "content": ""} and ping["done"] is False
    assert codec.event(TextDelta(0, "")) == b"" and codec.event(ChoiceReset(0)) == b""


def test_tool_calls_go_out_whole_at_the_end_of_the_choice() -> None:
    codec = OllamaCodec("chat", "m", exchange())
    pieces = [
        ToolCallChunk(0, "call_1", "get_weather", '{"city": '),
        ToolCallChunk(0, None, None, '"Paris"}'),
        ToolCallChunk(1, "call_2", "get_time", ""),
    ]
    assert all(codec.event(ToolCallDelta(0, p)) == b"" for p in pieces)
    [chunk] = parse(codec.event(ChoiceEnd(0, "tool_calls")))
    assert chunk["message"] == {  # type: ignore[comparison-overlap]
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}},
            {"function": {"index": 1, "name": "get_time", "arguments": {}}},
        ],
    }
    [final] = parse(codec.closing(7, 9))
    assert final["done"] is True and final["done_reason"] == "stop"


def test_final_chunk_durations_are_the_measured_ones() -> None:
    ex = exchange()
    codec = OllamaCodec("generate", "m", ex, turns=[("user", "hi")])
    codec.event(TextDelta(0, "Hel"))
    codec.event(TextDelta(0, "lo"))
    codec.event(ChoiceEnd(0, "length"))
    [final] = parse(codec.closing(3, 2))
    assert final["done_reason"] == "length"
    assert (final["prompt_eval_count"], final["eval_count"]) == (3, 2)
    assert final["response"] == ""
    assert abs(final["load_duration"] - 10_000_000) < 1_000  # type: ignore[operator]
    assert abs(final["prompt_eval_duration"] - 490_000_000) < 1_000  # type: ignore[operator]
    assert abs(final["eval_duration"] - 300_000_000) < 1_000  # type: ignore[operator]
    assert 1_000_000_000 <= final["total_duration"] < 2_000_000_000  # type: ignore[operator]
    text = "".join(map(chr, final["context"]))  # type: ignore[call-overload]
    assert json.loads(text) == [["user", "hi"], ["assistant", "Hello"]]


def test_whole_answers() -> None:
    codec = OllamaCodec("chat", "m", exchange())
    call = ToolCall("call_1", "f", '{"x": 1}')
    answer = Answer([ChoiceAnswer("ok", "tool_calls", None, [call])], 5, 6)
    body = codec.render(answer)
    assert body["message"]["tool_calls"] == [
        {"function": {"index": 0, "name": "f", "arguments": {"x": 1}}}
    ]
    assert body["done"] is True and body["eval_count"] == 6 and "context" not in body
    assert 1_000_000_000 <= body["total_duration"] < 2_000_000_000


def test_errors_in_ollamas_shape_and_status() -> None:
    assert status(RateLimited("busy", code="upstream_capacity")) == 503
    assert status(RateLimited("slow down", code="rate_limit_exceeded")) == 429
    assert status(ServiceUnavailable("down")) == 503
    assert status(NotServed("no")) == 501
    response = error_response(BadRequest("bad"), {"x-job-id": "j"}, "req_9")
    assert response.status_code == 400 and json.loads(bytes(response.body)) == {"error": "bad"}
    assert response.headers["x-request-id"] == "req_9"
    codec = OllamaCodec("chat", "m", exchange())
    assert parse(codec.failure(BadRequest("late"))) == [{"error": "late"}]


def test_config_details_and_the_ollama_address() -> None:
    import pytest
    from pydantic import ValidationError

    from gateway.config import OllamaSettings, Settings

    with pytest.raises(ValidationError, match=r"default_key applies only to ollama\.port"):
        OllamaSettings(default_key="sk-some-key-123")
    assert OllamaSettings(default_key="").default_key is None
    model = {"name": "g", "tag": "gemma:2b", "details": {"family": "gemma", "parameter_size": "2B"}}
    settings = Settings.model_validate({"models": [model]})
    details = settings.models[0].details
    assert details is not None and (details.family, details.format) == ("gemma", "gguf")
    with pytest.raises(ValidationError):
        Settings.model_validate({"models": [{**model, "details": {"famly": "x"}}]})
