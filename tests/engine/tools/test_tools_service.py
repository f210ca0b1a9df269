"""Tool calls and JSON through the real service: plan, submit, poll, retry, answer shapes.

The jobs API is the emulator app in-process (httpx.ASGITransport); everything else is the
gateway's own code.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from gateway.config import KeySettings, LimitSettings, ModelSettings, Settings, UpstreamSettings
from gateway.emulator.app import create_emulator_app
from gateway.emulator.engine import EmulatorConfig, Engine
from gateway.engine.catalog import ModelCatalog
from gateway.engine.choices import ChoiceState, ToolCallDelta
from gateway.engine.planning import Plan
from gateway.engine.service import Completions, Submitted
from gateway.errors import UpstreamError
from gateway.http.exchange import Exchange
from gateway.openai.answers import AnswerShape
from gateway.openai.codec import CompletionCodec
from gateway.openai.protocol import ChatCompletionRequest
from gateway.openai.translate import plan_chat
from gateway.serving.answers import collect as collect_answer
from gateway.serving.answers import stream_body
from gateway.upstream.client import JobsClient
from gateway.upstream.poller import PollerHub
from tests.engine.tools.tools_support import WEATHER

TOKEN = "upstream-token"
KEY = KeySettings(name="k", key="sk-test-0123456789", upstream_token=TOKEN)
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}
SCHEMA_FORMAT = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}


def sse_stream(shape: AnswerShape, plan: Any, choices: Any, events: Any, exchange: Any) -> Any:
    """The OpenAI stream of a run, as the chat route sends it."""
    return stream_body(CompletionCodec(shape, plan), plan, choices, events, exchange)


async def collect(shape: AnswerShape, plan: Any, choices: Any, events: Any, exchange: Any) -> Any:
    """The OpenAI answer of a run, as the chat route sends it."""
    answer = await collect_answer(plan, choices, events, exchange)
    return CompletionCodec(shape, plan).render(answer)


@dataclass
class World:
    engine: Engine
    completions: Completions
    catalog: ModelCatalog
    limits: LimitSettings


@pytest.fixture
async def world() -> AsyncIterator[World]:
    upstream = UpstreamSettings(
        base_url="http://emulator", poll_interval=0.01, max_jobs_per_token=4
    )
    limits = LimitSettings(keepalive_interval=5.0)
    settings = Settings(
        upstream=upstream, models=(ModelSettings(name="m", tag="m:1"),), keys=(KEY,), limits=limits
    )
    engine = Engine(
        EmulatorConfig(tokens=frozenset({TOKEN}), queue_seconds=0.0, words_per_second=500.0)
    )
    transport = httpx.ASGITransport(app=create_emulator_app(engine.config, engine))
    client = JobsClient(upstream, "http://emulator", transport=transport)
    hub = PollerHub(client, upstream, "http://emulator")
    yield World(engine, Completions(settings, client, hub), ModelCatalog(settings.models), limits)
    await hub.aclose()
    await client.aclose()


async def start(
    world: World, content: str, **fields: Any
) -> tuple[Plan, Submitted, list[ChoiceState], float]:
    body = {"model": "m", "messages": [{"role": "user", "content": content}], **fields}
    plan = plan_chat(ChatCompletionRequest.model_validate(body), world.catalog, world.limits)
    deadline = asyncio.get_running_loop().time() + 20
    jobs = await world.completions.submit(KEY, "team", plan, deadline)
    choices = [ChoiceState(i, job, plan, True) for i, job in enumerate(jobs.ids)]
    return plan, jobs, choices, deadline


async def answer(
    world: World, content: str, **fields: Any
) -> tuple[dict[str, Any], Exchange, Submitted]:
    plan, jobs, choices, deadline = await start(world, content, **fields)
    exchange = Exchange("req", "/v1/chat/completions", job_ids=list(jobs.ids))
    events = world.completions.events(plan, jobs, deadline, choices)
    try:
        body = await collect(AnswerShape("chat", "m", "fp"), plan, choices, events, exchange)
    finally:
        jobs.release()
    return body, exchange, jobs


async def test_a_tool_call_comes_back_as_tool_calls(world: World) -> None:
    body, exchange, _ = await answer(
        world, 'Paris? [[emulate:tool get_weather {"city": "Paris"} style=prose]]', tools=[WEATHER]
    )
    (choice,) = body["choices"]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] == "Let me call get_weather to find out."
    (call,) = message["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_") and len(call["id"]) == 29
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert exchange.completion_tokens > 0


async def test_a_call_alone_has_null_content_and_parallel_calls_keep_their_order(
    world: World,
) -> None:
    body, _, _ = await answer(
        world,
        '[[emulate:tool get_weather {"city": "Paris"}]] '
        '[[emulate:tool get_weather {"city": "Rome"}]]',
        tools=[WEATHER],
    )
    message = body["choices"][0]["message"]
    assert message["content"] is None
    cities = [json.loads(c["function"]["arguments"])["city"] for c in message["tool_calls"]]
    assert cities == ["Paris", "Rome"]
    assert len({c["id"] for c in message["tool_calls"]}) == 2


async def test_invalid_json_is_asked_for_again_within_the_budget(world: World) -> None:
    body, exchange, jobs = await answer(
        world,
        'Who? [[emulate:json {"name": "Ada", "age": 36} invalid_first=1]]',
        response_format=SCHEMA_FORMAT,
    )
    assert json.loads(body["choices"][0]["message"]["content"]) == {"name": "Ada", "age": 36}
    first, second = exchange.job_ids
    assert "could not be used" not in world.engine.timeline(first)["prompt"]  # type: ignore[index]
    again = world.engine.timeline(second)["prompt"]  # type: ignore[index]
    assert "Your previous answer could not be used: the answer's JSON is invalid" in again
    # Tokens of the discarded answer count; the request held one job slot throughout.
    assert body["usage"]["completion_tokens"] == exchange.completion_tokens > 12
    assert jobs.released and world.completions.slots(TOKEN).in_use == 0


async def test_a_required_call_that_never_comes_fails_clearly_after_the_budget(
    world: World,
) -> None:
    plan, jobs, choices, deadline = await start(
        world, "[[emulate:reply It is sunny.]]", tools=[WEATHER], tool_choice="required"
    )
    slots = world.completions.slots(TOKEN)
    assert slots.in_use == 1
    with pytest.raises(UpstreamError) as caught:
        async for _ in world.completions.events(plan, jobs, deadline, choices):
            assert slots.in_use == 1  # the new job takes the finished one's slot
    assert caught.value.code == "tool_call_invalid" and caught.value.status_code == 502
    assert "holds no tool call (in 3 attempts)" in caught.value.message
    assert len(choices[0].job_ids) == 3
    jobs.release()
    assert slots.in_use == 0


async def test_auto_returns_an_invalid_call_as_text(world: World) -> None:
    text = '[[emulate:tool get_weather {"city": "Paris"} style=invalid]]'
    body, exchange, _ = await answer(world, text, tools=[WEATHER])
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop" and "tool_calls" not in choice["message"]
    assert choice["message"]["content"].startswith("<tool_call>{{")
    assert len(exchange.job_ids) == 1


async def test_one_choice_asks_again_while_the_other_is_done(world: World) -> None:
    body, exchange, _ = await answer(
        world,
        '[[emulate:json {"name": "Ada", "age": 36} invalid_first=1]]',
        n=2,
        response_format={"type": "json_object"},
    )
    contents = [json.loads(c["message"]["content"]) for c in body["choices"]]
    assert contents == [{"name": "Ada", "age": 36}] * 2
    assert len(exchange.job_ids) == 3


async def test_streamed_tool_calls_are_incremental_openai_deltas(world: World) -> None:
    plan, jobs, choices, deadline = await start(
        world,
        '[[emulate:tool get_weather {"city": "Rio de Janeiro"}]]',
        tools=[WEATHER],
        stream=True,
    )
    exchange = Exchange("req", "/v1/chat/completions")
    events = world.completions.events(plan, jobs, deadline, choices)
    raw = b"".join(
        [
            chunk
            async for chunk in sse_stream(
                AnswerShape("chat", "m", "fp"), plan, choices, events, exchange
            )
        ]
    )
    jobs.release()
    frames = [line[6:] for line in raw.decode().split("\n\n") if line.startswith("data: ")]
    assert frames[-1] == "[DONE]"
    deltas = [json.loads(f)["choices"][0] for f in frames[:-1]]
    calls = [d["delta"]["tool_calls"][0] for d in deltas if "tool_calls" in d["delta"]]
    head, *rest = calls
    assert head["index"] == 0 and head["type"] == "function" and head["id"].startswith("call_")
    assert head["function"] == {"name": "get_weather", "arguments": ""}
    assert all(
        set(c) == {"index", "function"} and set(c["function"]) == {"arguments"} for c in rest
    )
    assert json.loads("".join(c["function"]["arguments"] for c in rest)) == {
        "city": "Rio de Janeiro"
    }
    assert deltas[-1]["finish_reason"] == "tool_calls"


async def test_streamed_invalid_json_ends_with_an_error_event(world: World) -> None:
    plan, jobs, choices, deadline = await start(
        world,
        '[[emulate:wps 40]] [[emulate:json {"name": "Ada"} style=prose]]',
        response_format=SCHEMA_FORMAT,
        stream=True,
    )
    exchange = Exchange("req", "/v1/chat/completions")
    events = world.completions.events(plan, jobs, deadline, choices)
    shape = AnswerShape("chat", "m", "fp")
    raw = b"".join([chunk async for chunk in sse_stream(shape, plan, choices, events, exchange)])
    jobs.release()
    frames = [json.loads(f[6:]) for f in raw.decode().split("\n\n") if f.startswith("data: ")]
    sent = "".join(f["choices"][0]["delta"].get("content", "") for f in frames[:-1])
    assert sent == '{"name": "Ada"}'  # the JSON streamed as it came, prose left out
    assert frames[-1]["error"]["code"] == "invalid_json_output"
    assert "'age' is a required property" in frames[-1]["error"]["message"]
    assert exchange.outcome == "invalid_json_output" and exchange.status == 502


async def test_tool_call_events_carry_the_choice_index(world: World) -> None:
    plan, jobs, choices, deadline = await start(
        world,
        "[[emulate:tool now]]",
        tools=[{"type": "function", "function": {"name": "now"}}],
        n=2,
        stream=True,
    )
    seen = {
        e.index
        for e in [e async for e in world.completions.events(plan, jobs, deadline, choices)]
        if isinstance(e, ToolCallDelta)
    }
    jobs.release()
    assert seen == {0, 1}
