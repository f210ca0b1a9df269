"""Ollama requests -> the engine's conversation: options, tools, formats, refusals."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.engine.conversation import Message, ToolCall
from gateway.errors import BadRequest, GatewayError
from gateway.http.bodies import validate
from gateway.ollama.context import decode_context, encode_context
from gateway.ollama.protocol import ChatRequest, GenerateRequest
from gateway.ollama.translate import (
    chat_conversation,
    generate_conversation,
    generate_turns,
    raw_prompts,
)


def chat(**fields: Any) -> ChatRequest:
    body = {"model": "gemma:2b", "messages": [{"role": "user", "content": "hi"}], **fields}
    return validate(ChatRequest, body)


def generate(**fields: Any) -> GenerateRequest:
    return validate(GenerateRequest, {"model": "gemma:2b", "prompt": "hi", **fields})


def test_stream_is_the_default_and_options_are_read_or_reported() -> None:
    conversation = chat_conversation(
        chat(options={"num_predict": 12, "stop": "END", "temperature": 0.1}, keep_alive="5m"),
        "gemma-2b",
    )
    assert conversation.stream is True and conversation.model == "gemma-2b"
    assert conversation.max_tokens == 12 and conversation.stops == ["END"]
    assert conversation.ignored == ["keep_alive", "options.temperature"]
    assert conversation.clamp_max_tokens and conversation.max_tokens_param == "options.num_predict"
    for endless in (-1, -2, 0):
        assert chat_conversation(chat(options={"num_predict": endless}), "m").max_tokens is None


@pytest.mark.parametrize(
    ("options", "param"),
    [({"num_predict": "10"}, "options.num_predict"), ({"stop": [1]}, "options.stop")],
)
def test_bad_options_name_the_field(options: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as raised:
        chat_conversation(chat(options=options), "m")
    assert raised.value.param == param


def test_a_tool_loop_becomes_calls_and_results() -> None:
    call = {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": "18 C", "tool_name": "get_weather"},
    ]
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}
    conversation = chat_conversation(chat(messages=messages, tools=[tool]), "m")
    assert conversation.messages == [
        Message("system", "Be brief."),
        Message("user", "Weather?"),
        Message(
            "assistant", "", tool_calls=(ToolCall("call_2_0", "get_weather", '{"city": "Paris"}'),)
        ),
        Message("tool", "18 C", name="get_weather"),
    ]
    assert conversation.tools[0].name == "get_weather"
    assert conversation.tools[0].param == "tools[0].function.parameters"


def test_formats() -> None:
    assert chat_conversation(chat(format=""), "m").output_format is None
    fmt = chat_conversation(chat(format="json"), "m").output_format
    assert fmt is not None and (fmt.kind, fmt.param) == ("json_object", "format")
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    fmt = chat_conversation(chat(format=schema), "m").output_format
    assert fmt is not None and fmt.kind == "json_schema" and fmt.schema == schema and fmt.strict
    with pytest.raises(BadRequest):
        validate(ChatRequest, {"model": "m", "messages": [], "format": "xml"})


@pytest.mark.parametrize(
    ("request_", "param"),
    [
        (lambda: chat_conversation(chat(messages=[]), "m"), "messages"),
        (
            lambda: chat_conversation(
                chat(messages=[{"role": "user", "content": "x", "images": ["aGk="]}]), "m"
            ),
            "messages[0].images",
        ),
        (lambda: generate_conversation(generate(suffix="x"), "m", []), "suffix"),
        (lambda: generate_conversation(generate(template="{{ .Prompt }}"), "m", []), "template"),
        (lambda: generate_conversation(generate(images=["aGk="]), "m", []), "images"),
        (lambda: generate_conversation(generate(prompt=""), "m", []), "prompt"),
        (lambda: raw_prompts(generate(raw=True, system="s"), "m"), "system"),
        (lambda: raw_prompts(generate(raw=True, format="json"), "m"), "format"),
        (lambda: generate_turns(generate(context=[1, 2, 3])), "context"),
    ],
)
def test_what_is_refused_names_the_field(request_: Any, param: str) -> None:
    with pytest.raises(GatewayError) as raised:
        request_()
    assert raised.value.status_code == 400 and raised.value.param == param


def test_generate_renders_system_the_context_turns_and_the_prompt() -> None:
    context = encode_context([("user", "Sky?"), ("assistant", "Blue.")])
    wire = generate(system="Be brief.", prompt="Night?", context=context, stream=False)
    turns = generate_turns(wire)
    assert turns == [("user", "Sky?"), ("assistant", "Blue."), ("user", "Night?")]
    conversation = generate_conversation(wire, "m", turns)
    assert [m.role for m in conversation.messages] == ["system", "user", "assistant", "user"]
    assert conversation.stream is False


def test_raw_prompts_go_as_they_are() -> None:
    prompts = raw_prompts(generate(raw=True, prompt="<s>[INST] x [/INST]"), "m")
    assert prompts.prompts == ["<s>[INST] x [/INST]"] and prompts.stream is True


def test_context_round_trips_any_text_and_refuses_the_rest() -> None:
    turns = [("user", 'quote " and \\ and ünïcödé 🦙'), ("assistant", "line\nbreak")]
    assert decode_context(encode_context(turns)) == turns
    assert decode_context([]) == []
    bad = [
        [-1],
        [0x110000],
        [0xD800],
        [ord(c) for c in '{"a": 1}'],
        [ord(c) for c in '[["system", "x"]]'],
        [ord(c) for c in "[" * 100_000],
        [ord(c) for c in json.dumps([["user", 1]])],
    ]
    for context in bad:
        with pytest.raises(BadRequest):
            decode_context(context)
