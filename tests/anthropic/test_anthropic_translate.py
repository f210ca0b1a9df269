"""A Messages request -> the engine's conversation (no sockets)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.anthropic.protocol import CountTokensRequest, MessagesRequest
from gateway.anthropic.translate import conversation
from gateway.engine.conversation import Message, ToolCall, ToolChoice
from gateway.errors import BadRequest
from gateway.http.bodies import validate

WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def request(**fields: Any) -> MessagesRequest:
    body = {"model": "claude-x", "max_tokens": 100, "messages": [{"role": "user", "content": "Hi"}]}
    return validate(MessagesRequest, {**body, **fields})


def test_a_plain_request() -> None:
    conv = conversation(request(system="Be brief.", stop_sequences=["END", ""], stream=True))
    assert conv.messages == [Message("system", "Be brief."), Message("user", "Hi")]
    assert conv.stops == ["END"]
    assert conv.max_tokens == 100 and conv.clamp_max_tokens and conv.stream
    assert conv.tools == [] and conv.tool_choice is None


def test_system_blocks_and_ignored_fields() -> None:
    conv = conversation(
        request(
            system=[
                {
                    "type": "text",
                    "text": "You are Claude Code.",
                    "cache_control": {"type": "ephemeral"},
                },
                {"type": "text", "text": "Be careful."},
            ],
            temperature=0.2,
            thinking={"type": "adaptive"},
            context_management={"edits": []},
            metadata={"user_id": "u"},
            output_config={"effort": "high"},
            brand_new_field=1,
        )
    )
    assert conv.messages[0] == Message("system", "You are Claude Code.\n\nBe careful.")
    assert conv.ignored == [
        "brand_new_field",
        "context_management",
        "metadata",
        "output_config.effort",
        "temperature",
        "thinking",
    ]


def test_a_tool_loop_becomes_calls_and_results() -> None:
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "s"},
                {"type": "text", "text": "Looking."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "content": [{"type": "text", "text": "boom"}],
                    "is_error": True,
                },
                {"type": "text", "text": "And tomorrow?"},
            ],
        },
    ]
    conv = conversation(request(messages=messages, tools=[WEATHER]))
    assert conv.messages == [
        Message("user", "Weather in Paris?"),
        Message(
            "assistant",
            "Looking.",
            tool_calls=(ToolCall("toolu_1", "get_weather", '{"city": "Paris"}'),),
        ),
        Message("tool", "Sunny", tool_call_id="toolu_1"),
        Message("tool", "Error: boom", tool_call_id="toolu_2"),
        Message("user", "And tomorrow?"),
    ]
    (tool,) = conv.tools
    assert tool.name == "get_weather" and tool.parameters == WEATHER["input_schema"]
    assert tool.param == "tools[0].input_schema"


@pytest.mark.parametrize(
    ("choice", "expected", "parallel"),
    [
        ({"type": "auto"}, ToolChoice("auto"), True),
        ({"type": "any", "disable_parallel_tool_use": True}, ToolChoice("required"), False),
        (
            {"type": "tool", "name": "get_weather"},
            ToolChoice("required", forced="get_weather", param="tool_choice.name"),
            True,
        ),
        ({"type": "none"}, ToolChoice("none"), True),
    ],
)
def test_tool_choices(choice: dict[str, Any], expected: ToolChoice, parallel: bool) -> None:
    conv = conversation(request(tools=[WEATHER], tool_choice=choice))
    assert conv.tool_choice == expected
    assert conv.parallel_tool_calls is parallel


def test_server_tools_are_ignored_not_refused() -> None:
    tools = [
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
        {"type": "bash_20250124", "name": "bash"},
        {**WEATHER, "type": "custom", "cache_control": {"type": "ephemeral"}},
    ]
    conv = conversation(request(tools=tools))
    assert [t.name for t in conv.tools] == ["get_weather"]
    assert "tools[0] (web_search_20250305)" in conv.ignored
    assert "tools[1] (bash_20250124)" in conv.ignored
    only_server = conversation(request(tools=tools[:1], tool_choice={"type": "any"}))
    assert only_server.tools == [] and only_server.tool_choice is None


@pytest.mark.parametrize(
    ("block", "param"),
    [
        (
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": ""}},
            "messages[0].content[1]",
        ),
        ({"type": "document", "source": {}}, "messages[0].content[1]"),
        ({"type": "tool_use", "id": "t", "name": "n", "input": {}}, "messages[0].content[1]"),
    ],
)
def test_blocks_that_are_refused_are_named(block: dict[str, Any], param: str) -> None:
    messages = [{"role": "user", "content": [{"type": "text", "text": "Look"}, block]}]
    with pytest.raises(BadRequest) as caught:
        conversation(request(messages=messages))
    assert caught.value.param == param
    assert block["type"] in caught.value.message


def test_an_image_inside_a_tool_result_is_refused() -> None:
    result = {
        "type": "tool_result",
        "tool_use_id": "t",
        "content": [{"type": "image", "source": {}}],
    }
    with pytest.raises(BadRequest) as caught:
        conversation(request(messages=[{"role": "user", "content": [result]}]))
    assert caught.value.param == "messages[0].content[0].content[0]"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"max_tokens": -1}, "max_tokens"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "developer", "content": "x"}]}, "messages[0].role"),
        (
            {"messages": [{"role": "user", "content": [{"type": "text"}]}]},
            "messages[0].content[0].text",
        ),
        ({"tools": [{"name": "f"}]}, "tools[0].input_schema"),
        ({"tool_choice": {"type": "sometimes"}}, "tool_choice"),
    ],
)
def test_malformed_requests_name_the_field(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as caught:
        request(**fields)
    assert caught.value.param is not None and caught.value.param.startswith(param)


def test_max_tokens_0_is_refused_with_the_reason() -> None:
    """Anthropic takes 0 to warm its prompt cache; there is none here, so it is refused."""
    with pytest.raises(BadRequest) as caught:
        conversation(request(max_tokens=0))
    assert caught.value.param == "max_tokens" and caught.value.code == "unsupported_parameter"
    assert "prompt cache" in caught.value.message
    with pytest.raises(BadRequest, match="greater than or equal to 0"):
        request(max_tokens=-1)


def test_max_tokens_is_required_but_not_for_count_tokens() -> None:
    with pytest.raises(BadRequest) as caught:
        validate(MessagesRequest, {"model": "m", "messages": [{"role": "user", "content": "x"}]})
    assert caught.value.param == "max_tokens"
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [WEATHER]}
    conv = conversation(validate(CountTokensRequest, body))
    assert conv.max_tokens is None and len(conv.tools) == 1


def test_structured_outputs_ask_for_json() -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}}}
    conv = conversation(
        request(
            output_config={"effort": "low", "format": {"type": "json_schema", "schema": schema}}
        )
    )
    assert conv.output_format is not None and conv.output_format.schema == schema
    assert conv.output_format.param == "output_config.format"
    assert conv.ignored == ["output_config.effort"]
    beta = conversation(request(output_format={"type": "json_schema", "schema": schema}))
    assert beta.output_format is not None and beta.output_format.param == "output_format"
    assert conversation(request(output_config={"effort": "high"})).output_format is None


def test_system_messages_inside_messages_stay_where_they_came() -> None:
    """Claude Code (2.1.154 and later) sends ``{"role": "system"}`` entries mid-conversation,
    between tool turns; each becomes a system message in its place, the calls around it whole."""
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}},
            ],
        },
        {
            "role": "system",
            "content": [
                {"type": "text", "text": "# Environment"},
                {"type": "text", "text": "cwd: /tmp"},
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny"}],
        },
        {"role": "system", "content": "Be brief."},
        {"role": "system", "content": []},  # nothing to say: no empty turn
    ]
    conv = conversation(request(system="Top.", messages=messages, tools=[WEATHER]))
    assert conv.messages == [
        Message("system", "Top."),
        Message("user", "Weather in Paris?"),
        Message("assistant", "", tool_calls=(ToolCall("toolu_1", "get_weather", "{}"),)),
        Message("system", "# Environment\n\ncwd: /tmp"),
        Message("tool", "Sunny", tool_call_id="toolu_1"),
        Message("system", "Be brief."),
    ]
    assert not conv.continue_final


def test_a_system_message_holds_text_only() -> None:
    image = {"type": "image", "source": {}}
    with pytest.raises(BadRequest) as caught:
        conversation(request(messages=[{"role": "system", "content": [image]}]))
    assert caught.value.param == "messages[0].content[0]"


@pytest.mark.parametrize(
    ("last", "continued"),
    [
        ({"role": "assistant", "content": "The answer is ("}, True),
        ({"role": "assistant", "content": [{"type": "text", "text": "{"}]}, True),
        ({"role": "assistant", "content": "  "}, False),  # nothing to continue: a new turn
        ({"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f"}]}, False),
        ({"role": "user", "content": "Go on."}, False),
    ],
)
def test_a_last_assistant_message_is_a_prefill(last: dict[str, Any], continued: bool) -> None:
    messages = [{"role": "user", "content": "Pick one."}, last]
    assert conversation(request(messages=messages)).continue_final is continued


def test_a_prefill_is_not_continued_into_a_structured_answer() -> None:
    fmt = {"format": {"type": "json_schema", "schema": {"type": "object"}}}
    messages = [{"role": "user", "content": "JSON"}, {"role": "assistant", "content": "{"}]
    assert not conversation(request(messages=messages, output_config=fmt)).continue_final
