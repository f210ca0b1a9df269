"""End to end: the official anthropic SDK, LangChain's ChatAnthropic and a Claude-Code-shaped
client against the gateway's Messages door and the emulator, over loopback.

This module starts its own emulator (faults are global to one) and gateway, whose config
routes every ``claude-*`` name to gemma-2b. Every answer and stream event is validated against
the anthropic SDK's own types, not only read through the SDK (which does not validate).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import anthropic
import httpx
import pytest
from anthropic.types import (
    ErrorResponse,
    Message,
    MessageParam,
    MessageTokensCount,
    ModelInfo,
    RawMessageStreamEvent,
)
from pydantic import BaseModel, TypeAdapter

from gateway.emulator import reply_for
from gateway.engine.tokens import count_tokens
from tests.e2e.conftest import job_prompt
from tests.e2e.servers import (
    ALICE_KEY,
    ALICE_TOKEN,
    Server,
    gateway_config,
    running,
    start_emulator,
    start_gateway,
)

TINY_KEY = "sk-test-tiny-0123456789"
METERED_KEY = "sk-test-metered-0123456789"
EVENTS: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)
WEATHER: Any = {
    "name": "get_weather",
    "description": "The weather in a city now.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "note": {"type": "string"}},
        "required": ["city"],
    },
}
QUICK = "[[emulate:queue 0.05]] "
# Slow and long enough that the call's input arrives over many polls.
SLOW_CALL = (
    "[[emulate:queue 0.05]] [[emulate:wps 25]] What is the weather in Rio? [[emulate:tool "
    'get_weather {"city": "Rio de Janeiro", "note": "one two three four five six seven eight"} '
    "style=prose]]"
)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running(start_emulator(tmp_path_factory.mktemp("anthropic-emulator"))) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(emulator: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    config = gateway_config(
        emulator.url,
        models=[
            {"name": "gemma-2b", "tag": "gemma:2b", "aliases": ["claude-*"]},
            {"name": "llama2-uncensored", "tag": "llama2-uncensored", "template": "llama2"},
            {"name": "gemma-cached", "tag": "gemma:2b"},
        ],
        keys=[
            {"name": "alice", "key": ALICE_KEY, "upstream_token": ALICE_TOKEN},
            {"name": "tiny", "key": TINY_KEY, "upstream_token": ALICE_TOKEN, "rpm": 1},
            {
                "name": "metered",
                "key": METERED_KEY,
                "upstream_token": ALICE_TOKEN,
                "rpm": 50,
                "tpm": 1_000_000,
            },
        ],
        cache={"models": ["gemma-cached"]},  # only there: the other tests ask alike twice
    )
    tmp = tmp_path_factory.mktemp("anthropic-gateway")
    with running(start_gateway(tmp, config)) as server:
        yield server


@pytest.fixture(autouse=True)
def no_faults(emulator: Server) -> Iterator[None]:
    yield
    httpx.delete(emulator.url + "/emulator/faults")


def client(gateway: Server, key: str = ALICE_KEY) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0)


def error_type(error: anthropic.APIStatusError) -> str:
    """The error's ``type``, its body validated as the SDK's ErrorResponse."""
    return ErrorResponse.model_validate(error.body).error.type


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


def sse_events(answer: httpx.Response) -> list[dict[str, Any]]:
    """Every event of a stream, each validated as the SDK's own stream-event type."""
    events = []
    name = None
    for line in answer.iter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data = json.loads(line[6:])
            assert data["type"] == name
            if name not in ("ping", "error"):
                EVENTS.validate_python(data)
            events.append(data)
    return events


# ------------------------------------------------------------------------------ the SDK


def test_create_answers_with_what_the_emulator_wrote(gateway: Server, emulator: Server) -> None:
    raw = client(gateway).messages.with_raw_response.create(
        model="claude-sonnet-4-5",
        max_tokens=1024,
        system="Be brief.",
        messages=user(QUICK + "When does 1+1=10?"),
    )
    message = Message.model_validate(raw.http_response.json())
    prompt = job_prompt(emulator, raw.headers["x-job-id"])
    assert "Be brief." in prompt and "When does 1+1=10?" in prompt
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == reply_for(prompt)  # type: ignore[union-attr]
    assert message.id.startswith("msg_") and message.role == "assistant"
    assert message.model == "gemma-2b"
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.usage.input_tokens == count_tokens(prompt)
    assert message.usage.output_tokens == count_tokens(reply_for(prompt))
    assert raw.headers["request-id"] == raw.headers["x-request-id"]


def test_stream_text_and_final_message(gateway: Server, emulator: Server) -> None:
    text = QUICK + "Tell me a story [[emulate:words 30]]"
    with client(gateway).messages.stream(
        model="gemma-2b", max_tokens=1024, messages=user(text)
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
        job_id = stream.response.headers["x-job-id"]
    expected = reply_for(job_prompt(emulator, job_id))
    assert len(pieces) >= 3 and "".join(pieces) == expected
    assert final.content[0].text == expected  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == count_tokens(expected)


def test_every_stream_event_validates_and_pings_keep_a_queued_job_alive(gateway: Server) -> None:
    body = {
        "model": "gemma-2b",
        "max_tokens": 5,
        "stream": True,
        "messages": user("[[emulate:queue 1.6]] [[emulate:words 20]]"),
    }
    headers = {"x-api-key": ALICE_KEY, "anthropic-version": "2023-06-01"}
    with httpx.stream(
        "POST", gateway.url + "/v1/messages", json=body, headers=headers, timeout=30
    ) as answer:
        assert answer.status_code == 200
        events = sse_events(answer)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "message_start" and "ping" in kinds
    assert kinds[-2:] == ["message_delta", "message_stop"]
    assert events[-2]["delta"]["stop_reason"] == "max_tokens"
    assert events[-2]["usage"]["output_tokens"] == 5


def test_stop_sequences_are_reported(gateway: Server) -> None:
    message = client(gateway).messages.create(
        model="gemma-2b",
        max_tokens=100,
        stop_sequences=["STOP"],
        messages=user(QUICK + "[[emulate:reply first part STOP second part]]"),
    )
    assert message.content[0].text == "first part "  # type: ignore[union-attr]
    assert message.stop_reason == "stop_sequence" and message.stop_sequence == "STOP"


def test_a_tool_loop_streamed_and_not(gateway: Server) -> None:
    sdk = client(gateway)
    whole = sdk.messages.create(
        model="gemma-2b", max_tokens=1024, messages=user(SLOW_CALL), tools=[WEATHER]
    )
    Message.model_validate(whole.model_dump())
    assert whole.stop_reason == "tool_use"
    call = whole.content[-1]
    assert call.type == "tool_use" and call.id.startswith("toolu_")
    assert call.name == "get_weather" and call.input["city"] == "Rio de Janeiro"  # type: ignore[index]

    with sdk.messages.stream(
        model="gemma-2b", max_tokens=1024, messages=user(SLOW_CALL), tools=[WEATHER]
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    streamed = final.content[-1]
    assert streamed.type == "tool_use" and streamed.input == call.input
    assert final.stop_reason == "tool_use"
    assert [b.type for b in final.content] == [b.type for b in whole.content]
    fragments = [e for e in events if e.type == "input_json"]
    assert len(fragments) > 1  # the input arrived in pieces, not in one piece at the end

    history = [
        *user(SLOW_CALL),
        {"role": "assistant", "content": [block.model_dump() for block in whole.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "Sunny, 31C"}],
        },
    ]
    answer = sdk.messages.create(
        model="gemma-2b", max_tokens=1024, messages=history, tools=[WEATHER]
    )
    assert answer.stop_reason == "end_turn"
    assert "Sunny, 31C" in answer.content[0].text  # type: ignore[union-attr]


def test_tool_choice_forces_a_named_tool(gateway: Server) -> None:
    message = client(gateway).messages.create(
        model="gemma-2b",
        max_tokens=256,
        messages=user(QUICK + 'Paris? [[emulate:tool get_weather {"city": "Paris"}]]'),
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
    )
    (call,) = message.content
    assert call.type == "tool_use" and call.input == {"city": "Paris"}


class Person(BaseModel):
    name: str
    age: int


def test_structured_outputs_parse_into_the_model(gateway: Server) -> None:
    ada = (
        QUICK
        + 'Who wrote the first program? [[emulate:json {"name": "Ada", "age": 36} style=prose]]'
    )
    parsed = client(gateway).messages.parse(
        model="gemma-2b", max_tokens=256, messages=user(ada), output_format=Person
    )
    assert parsed.parsed_output == Person(name="Ada", age=36)
    assert parsed.stop_reason == "end_turn"


def test_count_tokens_counts_the_system_and_the_tools(gateway: Server) -> None:
    sdk = client(gateway)
    messages = user("What is the weather in Paris?")
    plain = sdk.messages.count_tokens(model="claude-haiku-4-5", messages=messages)
    MessageTokensCount.model_validate(plain.model_dump())
    system = sdk.messages.count_tokens(model="gemma-2b", messages=messages, system="Be brief.")
    tools = sdk.messages.count_tokens(model="gemma-2b", messages=messages, tools=[WEATHER])
    assert 0 < plain.input_tokens < system.input_tokens < tools.input_tokens


def test_models_in_anthropics_shape_and_in_openais(gateway: Server) -> None:
    sdk = client(gateway)
    page = sdk.models.list()
    ids = [model.id for model in page.data]
    assert ids == ["gemma-2b", "llama2-uncensored", "gemma-cached"]  # the pattern is not listed
    assert all(model.type == "model" and model.display_name for model in page.data)
    assert page.first_id == "gemma-2b" and page.last_id == "gemma-cached"
    assert [m.id for m in sdk.models.list(limit=1)] == ids  # the SDK pages through
    assert sdk.models.retrieve("claude-opus-4-5").id == "claude-opus-4-5"
    with pytest.raises(anthropic.NotFoundError):
        sdk.models.retrieve("mistral-large")
    raw = httpx.get(
        gateway.url + "/v1/models",
        headers={"x-api-key": ALICE_KEY, "anthropic-version": "2023-06-01"},
    ).json()
    assert [ModelInfo.model_validate(entry).id for entry in raw["data"]] == ids
    openai_shaped = httpx.get(
        gateway.url + "/v1/models", headers={"authorization": f"Bearer {ALICE_KEY}"}
    ).json()
    assert openai_shaped["object"] == "list"
    chat = httpx.post(  # x-api-key is a gateway key on the OpenAI door too
        gateway.url + "/v1/chat/completions",
        json={"model": "gemma-2b", "messages": user(QUICK + "hi"), "max_tokens": 3},
        headers={"x-api-key": ALICE_KEY},
        timeout=30,
    )
    assert chat.status_code == 200 and chat.json()["object"] == "chat.completion"


# ------------------------------------------------------------------------------ errors


def test_each_error_class_where_it_belongs(gateway: Server, emulator: Server) -> None:
    with pytest.raises(anthropic.AuthenticationError) as auth:
        client(gateway, key="sk-wrong-0123456789").messages.create(
            model="gemma-2b", max_tokens=10, messages=user("hi")
        )
    assert error_type(auth.value) == "authentication_error"
    assert auth.value.request_id
    with pytest.raises(anthropic.NotFoundError) as missing:
        client(gateway).messages.create(model="mistral-large", max_tokens=10, messages=user("hi"))
    assert "mistral-large" in missing.value.message
    assert error_type(missing.value) == "not_found_error"
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": ""}}
    with pytest.raises(anthropic.BadRequestError) as bad:
        client(gateway).messages.create(
            model="gemma-2b",
            max_tokens=10,
            messages=[{"role": "user", "content": [{"type": "text", "text": "see"}, image]}],
        )
    assert "messages[0].content[1]" in bad.value.message
    assert error_type(bad.value) == "invalid_request_error"
    with pytest.raises(anthropic.InternalServerError) as failed:
        client(gateway).messages.create(
            model="gemma-2b", max_tokens=100, messages=user(QUICK + "[[emulate:fail boom]]")
        )
    assert failed.value.status_code == 500
    assert error_type(failed.value) == "api_error"


def test_the_clients_own_limit_is_a_rate_limit_error(gateway: Server) -> None:
    tiny = client(gateway, key=TINY_KEY)
    tiny.messages.create(model="gemma-2b", max_tokens=5, messages=user(QUICK + "hi"))
    with pytest.raises(anthropic.RateLimitError) as limited:
        tiny.messages.create(model="gemma-2b", max_tokens=5, messages=user(QUICK + "hi"))
    assert int(limited.value.response.headers["retry-after"]) >= 1
    assert error_type(limited.value) == "rate_limit_error"
    # Anthropic's own rate-limit headers on the 429 too: nothing left, and when it comes back.
    headers = limited.value.response.headers
    assert headers["anthropic-ratelimit-requests-limit"] == "1"
    assert headers["anthropic-ratelimit-requests-remaining"] == "0"
    reset = datetime.fromisoformat(headers["anthropic-ratelimit-requests-reset"])
    assert datetime.now(UTC) < reset <= datetime.now(UTC) + timedelta(seconds=61)
    # Counting tokens is a request too (0 tokens, no job): admitted and limited the same way.
    with pytest.raises(anthropic.RateLimitError) as counted:
        tiny.messages.count_tokens(model="gemma-2b", messages=user("hi"))
    assert error_type(counted.value) == "rate_limit_error"


def test_an_overloaded_upstream_is_a_529(gateway: Server, emulator: Server) -> None:
    fault = {"submit": {"http": 429, "retry_after": 0.1, "repeat": True}}
    assert httpx.post(emulator.url + "/emulator/faults", json=fault).status_code == 200
    with pytest.raises(anthropic.OverloadedError) as overloaded:
        client(gateway).messages.create(model="gemma-2b", max_tokens=5, messages=user("hi"))
    assert error_type(overloaded.value) == "overloaded_error"
    assert overloaded.value.response.headers["retry-after"]


def test_a_failure_after_the_stream_began_is_an_error_event(gateway: Server) -> None:
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        client(gateway).messages.stream(
            model="gemma-2b", max_tokens=100, messages=user(QUICK + "[[emulate:fail boom]]")
        ) as stream,
    ):
        for _ in stream.text_stream:
            pass
    assert error_type(caught.value) == "api_error"


def test_unknown_message_paths_and_methods_answer_in_anthropics_shape(gateway: Server) -> None:
    headers = {"x-api-key": ALICE_KEY}
    unknown = httpx.post(gateway.url + "/v1/messages/unknown", json={}, headers=headers)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["type"] == "not_found_error"
    batches = httpx.post(gateway.url + "/v1/messages/batches", json={}, headers=headers)
    assert batches.status_code == 400  # served (gateway/anthropic/batches.py): a bad body
    assert batches.json()["error"]["type"] == "invalid_request_error"
    get = httpx.get(gateway.url + "/v1/messages", headers=headers)
    assert get.status_code == 405 and get.json()["type"] == "error"
    assert get.headers["allow"] == "POST"
    for method in ("HEAD", "GET"):
        assert httpx.request(method, gateway.url + "/").status_code == 200


# ------------------------------------------------------------------------------ clients


def test_a_claude_code_shaped_request_streams_a_full_answer(
    gateway: Server, emulator: Server
) -> None:
    tools = [
        {
            "name": f"Tool{i}",
            "description": f"Tool number {i}.",
            "input_schema": {
                "type": "object",
                "properties": {"path": {"type": "string"}},
                "required": ["path"],
                "additionalProperties": False,
                "$schema": "http://json-schema.org/draft-07/schema#",
            },
        }
        for i in range(24)
    ]
    tools.append({"type": "web_search_20250305", "name": "web_search", "max_uses": 5})
    cached = {"type": "ephemeral"}
    body = {
        "model": "claude-opus-4-5-20251101",
        "max_tokens": 64000,
        "stream": True,
        "system": [
            {"type": "text", "text": "You are Claude Code.", "cache_control": cached},
            {"type": "text", "text": "Answer in the user's language.", "cache_control": cached},
        ],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "<system-reminder>context</system-reminder>"},
                    {"type": "text", "text": QUICK + "Fix the bug.", "cache_control": cached},
                ],
            }
        ],
        "tools": tools,
        "metadata": {"user_id": "user_abc_account__session_123"},
        "thinking": {"type": "adaptive"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "output_config": {"effort": "high"},
    }
    headers = {
        "x-api-key": ALICE_KEY,
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14,"
        "context-management-2025-06-27",
        "anthropic-dangerous-direct-browser-access": "true",
        "x-app": "cli",
        "user-agent": "claude-cli/2.1.0 (external, cli)",
    }
    assert httpx.head(gateway.url + "/").status_code == 200
    with httpx.stream(
        "POST", gateway.url + "/v1/messages?beta=true", json=body, headers=headers, timeout=30
    ) as answer:
        assert answer.status_code == 200, answer.read()
        events = sse_events(answer)
        job_id = answer.headers["x-job-id"]
    text = "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta")
    prompt = job_prompt(emulator, job_id)
    assert "You are Claude Code." in prompt and "Tool23" in prompt and "web_search" not in prompt
    assert text == reply_for(prompt)
    assert events[-2]["delta"]["stop_reason"] == "end_turn"
    assert events[-1]["type"] == "message_stop"


def test_langchain_chat_anthropic(gateway: Server) -> None:
    from langchain_anthropic import ChatAnthropic
    from langchain_core.messages import AIMessageChunk

    llm = ChatAnthropic(  # type: ignore[call-arg]
        model="claude-sonnet-4-5",
        base_url=gateway.url,
        api_key=ALICE_KEY,
        max_tokens=256,
        max_retries=0,
    )
    said = llm.invoke(QUICK + "[[emulate:reply Paris is the capital.]]")
    assert said.content == "Paris is the capital."
    assert said.usage_metadata is not None
    assert said.usage_metadata["output_tokens"] == count_tokens("Paris is the capital.")

    long = "one two three four five six seven eight nine ten"
    chunks = list(llm.stream(QUICK + f"[[emulate:wps 30]] [[emulate:reply {long}]]"))
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert len([c for c in chunks if c.content]) >= 2
    full = chunks[0]
    for chunk in chunks[1:]:
        full += chunk
    assert full.text == long
    assert full.usage_metadata is not None and full.usage_metadata["input_tokens"] > 0

    with_tools = llm.bind_tools([WEATHER])
    called = with_tools.invoke(QUICK + 'Paris? [[emulate:tool get_weather {"city": "Paris"}]]')
    assert [(c["name"], c["args"]) for c in called.tool_calls] == [
        ("get_weather", {"city": "Paris"})
    ]


# ------------------------------------------------------------------------- issue 24, item 1


def test_system_messages_inside_messages_are_read_where_they_came(
    gateway: Server, emulator: Server
) -> None:
    """What Claude Code 2.1.154 and later sends: ``system`` entries in ``messages``, here
    between a tool call and its result. Typed with the SDK's own ``MessageParam``."""
    messages: list[MessageParam] = [
        {"role": "user", "content": "What is the weather in Oslo?"},
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "toolu_01",
                    "name": "get_weather",
                    "input": {"city": "Oslo"},
                },
            ],
        },
        {"role": "system", "content": [{"type": "text", "text": "The user is in a hurry."}]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": "Snow, -3 C"},
                {"type": "text", "text": QUICK + "Thanks."},
            ],
        },
        {"role": "system", "content": "Answer in one line."},
    ]
    raw = client(gateway).messages.with_raw_response.create(
        model="claude-sonnet-4-5",
        max_tokens=200,
        system="Be kind.",
        messages=messages,
        tools=[WEATHER],
    )
    message = Message.model_validate(raw.http_response.json())
    prompt = job_prompt(emulator, raw.headers["x-job-id"])
    order = [
        "Be kind.",
        "What is the weather in Oslo?",
        '"city": "Oslo"',
        "The user is in a hurry.",
        "Snow, -3 C",
        "Thanks.",
        "Answer in one line.",
    ]
    at = [prompt.index(text) for text in order]
    assert at == sorted(at), prompt
    assert message.content[0].text == reply_for(prompt)  # type: ignore[union-attr]
    # count_tokens reads them too: the same conversation without them is shorter.
    counted = client(gateway).messages.count_tokens(model="gemma-2b", messages=messages)
    without = [m for m in messages if m["role"] != "system"]
    fewer = client(gateway).messages.count_tokens(model="gemma-2b", messages=without)
    assert MessageTokensCount.model_validate(counted.model_dump()).input_tokens > fewer.input_tokens


def test_rate_limit_headers_in_anthropics_spelling(gateway: Server) -> None:
    raw = client(gateway, key=METERED_KEY).messages.with_raw_response.create(
        model="gemma-2b", max_tokens=20, messages=user(QUICK + "Count the limits.")
    )
    headers = raw.headers
    assert headers["anthropic-ratelimit-requests-limit"] == "50"
    assert 0 <= int(headers["anthropic-ratelimit-requests-remaining"]) < 50
    assert headers["anthropic-ratelimit-tokens-limit"] == "1000000"
    assert 0 < int(headers["anthropic-ratelimit-tokens-remaining"]) < 1_000_000
    now = datetime.now(UTC)
    for what in ("requests", "tokens"):
        value = headers[f"anthropic-ratelimit-{what}-reset"]
        assert value.endswith("Z")  # RFC 3339, UTC
        reset = datetime.fromisoformat(value)
        assert now - timedelta(seconds=2) < reset <= now + timedelta(seconds=61)
    # The same figures as OpenAI's headers, which stay for OpenAI clients.
    assert (
        headers["x-ratelimit-remaining-requests"]
        == (headers["anthropic-ratelimit-requests-remaining"])
    )
    # A stream carries them too, one request fewer left.
    with client(gateway, key=METERED_KEY).messages.stream(
        model="gemma-2b", max_tokens=20, messages=user(QUICK + "Stream the limits.")
    ) as stream:
        streamed = stream.response.headers
        stream.until_done()
    left = int(headers["anthropic-ratelimit-requests-remaining"])
    assert int(streamed["anthropic-ratelimit-requests-remaining"]) == left - 1
    assert streamed["anthropic-ratelimit-tokens-reset"].endswith("Z")


@pytest.mark.parametrize("stream", [False, True])
def test_a_prefill_is_continued(gateway: Server, emulator: Server, stream: bool) -> None:
    """A last assistant message is the start of the answer: the prompt ends inside it (no new
    turn is opened) and the answer is what comes next."""
    messages: list[MessageParam] = [
        {"role": "user", "content": QUICK + "The Greek name for the Sun? (A) Sol (B) Helios"},
        {"role": "assistant", "content": "The best answer is ("},
    ]
    sdk = client(gateway)
    if stream:
        with sdk.messages.stream(model="gemma-2b", max_tokens=50, messages=messages) as events:
            text = "".join(events.text_stream)
            message = events.get_final_message()
            job_id = events.response.headers["x-job-id"]
    else:
        raw = sdk.messages.with_raw_response.create(
            model="gemma-2b", max_tokens=50, messages=messages
        )
        message = Message.model_validate(raw.http_response.json())
        text, job_id = message.content[0].text, raw.headers["x-job-id"]  # type: ignore[union-attr]
    prompt = job_prompt(emulator, job_id)
    assert prompt.endswith("Helios\n\nAssistant: The best answer is (")  # no new turn
    assert text == reply_for(prompt) and message.stop_reason == "end_turn"


def test_usage_has_the_cache_fields(gateway: Server) -> None:
    """0 and 0 on a fresh answer; on an answer from the response cache, the whole prompt was
    read from it."""
    sdk = client(gateway)
    ask = {"model": "gemma-cached", "max_tokens": 30, "messages": user(QUICK + "Cache me.")}
    first = sdk.messages.with_raw_response.create(**ask)
    fresh = Message.model_validate(first.http_response.json()).usage
    assert first.headers["x-gateway-cache"] == "miss"
    assert (fresh.cache_creation_input_tokens, fresh.cache_read_input_tokens) == (0, 0)
    assert fresh.input_tokens > 0
    again = sdk.messages.with_raw_response.create(**ask)
    hit = Message.model_validate(again.http_response.json()).usage
    assert again.headers["x-gateway-cache"] == "hit"
    assert (hit.input_tokens, hit.cache_creation_input_tokens) == (0, 0)
    assert hit.cache_read_input_tokens == fresh.input_tokens
    assert hit.output_tokens == fresh.output_tokens
    # Streamed: in message_start and in the closing message_delta.
    with httpx.stream(
        "POST",
        gateway.url + "/v1/messages",
        json={**ask, "stream": True},
        headers={"x-api-key": ALICE_KEY, "anthropic-version": "2023-06-01"},
    ) as answer:
        events = sse_events(answer)
    start, delta = events[0]["message"]["usage"], events[-2]["usage"]
    assert start["cache_read_input_tokens"] == delta["cache_read_input_tokens"] > 0
    assert start["input_tokens"] == delta["input_tokens"] == 0
