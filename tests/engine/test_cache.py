"""The response cache without sockets: what the key covers, stored answers, stores, policy."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from gateway.config import CacheSettings, KeySettings, LimitSettings, ModelSettings
from gateway.engine.answer import AnswerBuilder
from gateway.engine.cache import (
    ReplayedChoice,
    ResponseCache,
    cache_key,
    decode,
    encode,
    replay,
)
from gateway.engine.cache_stores import MemoryStore
from gateway.engine.catalog import ModelCatalog
from gateway.engine.conversation import Conversation, Message, OutputFormat, ToolDefinition
from gateway.engine.events import (
    KEEPALIVE,
    ChoiceEnd,
    ChoiceReset,
    Event,
    TextDelta,
    ToolCallChunk,
    ToolCallDelta,
)
from gateway.engine.planning import Plan, plan_conversation
from gateway.serving.web import cache_directives

MODELS = (
    ModelSettings(name="m", tag="m:1", cache=True),
    ModelSettings(name="plain", tag="m:1"),
    ModelSettings(name="other", tag="m:2", aliases=("other-alias",)),
)
CATALOG = ModelCatalog(MODELS)
KEY = KeySettings(name="k", key="sk-test-0123456789", upstream_token="t")
WEATHER = ToolDefinition(
    "get_weather", "The weather", {"type": "object", "properties": {"city": {"type": "string"}}}
)


def plan(text: str = "Hello", **fields: object) -> Plan:
    conversation = Conversation(
        model=str(fields.pop("model", "m")),
        messages=[Message("user", text)],
        **fields,  # type: ignore[arg-type]
    )
    return plan_conversation(conversation, CATALOG, LimitSettings())


def test_the_key_covers_what_decides_the_answer_and_not_the_wire_format() -> None:
    base = cache_key(plan())
    assert cache_key(plan(stream=True, include_usage=True)) == base  # how it is written
    assert cache_key(plan(model="plain")) == base  # another name of the same tag and template
    different = [
        plan("Hello!"),
        plan(model="other"),
        plan(stops=["\n"]),
        plan(max_tokens=10),
        plan(n=2),
        plan(tools=[WEATHER]),
        plan(output_format=OutputFormat("json_object")),
    ]
    keys = [cache_key(p) for p in different]
    assert base not in keys and len(set(keys)) == len(keys)


def test_a_schema_with_integers_beyond_64_bits_still_has_a_key() -> None:
    huge = ToolDefinition("f", "", {"type": "object", "properties": {"a": {"maximum": 2**70}}})
    other = ToolDefinition("f", "", {"type": "object", "properties": {"a": {"maximum": 2**71}}})
    key = cache_key(plan(tools=[huge]))
    assert key == cache_key(plan(tools=[huge])) != cache_key(plan(tools=[other]))


async def run(events: Sequence[Event]) -> AsyncIterator[Event]:
    for event in events:
        yield event


async def drain(events: AsyncIterator[Event]) -> list[Event]:
    return [event async for event in events]


LIVE: list[Event] = [
    TextDelta(0, "draft"),
    ChoiceReset(0),
    KEEPALIVE,
    TextDelta(0, "Hel"),
    TextDelta(0, "lo"),
    ChoiceEnd(0, "stop", "\n"),
    ToolCallDelta(1, ToolCallChunk(0, "call_live", "get_weather", '{"ci')),
    ToolCallDelta(1, ToolCallChunk(0, None, None, 'ty": "Oslo"}')),
    ChoiceEnd(1, "tool_calls"),
]


def cache(**settings: object) -> ResponseCache:
    cached = CacheSettings(**settings)  # type: ignore[arg-type]
    return ResponseCache(cached, MemoryStore(cached.max_entries, cached.max_bytes, cached.ttl))


async def test_a_complete_answer_is_stored_and_replays_to_the_same_answer() -> None:
    responses = cache()
    passed = await drain(responses.recording(run(LIVE), "k1", 2, 7, lambda: 11))
    assert passed == LIVE  # the live events go through unchanged
    stored = await responses.lookup("k1")
    assert stored is not None and (stored.prompt_tokens, stored.completion_tokens) == (7, 11)
    replayed = await drain(replay(stored))
    builder = AnswerBuilder(2)
    for event in replayed:
        builder.add(event)
    again = builder.answer(7, 11)
    live = AnswerBuilder(2)
    for event in LIVE:
        live.add(event)
    first = live.answer(7, 11)
    assert [c.text for c in again.choices] == ["Hello", ""]
    assert [(c.reason, c.stop_sequence) for c in again.choices] == [
        ("stop", "\n"),
        ("tool_calls", None),
    ]
    assert [(t.name, t.arguments) for t in again.choices[1].tool_calls] == [
        (t.name, t.arguments) for t in first.choices[1].tool_calls
    ]
    assert again.choices[1].tool_calls[0].id.startswith("call_")
    assert again.choices[1].tool_calls[0].id != "call_live"  # ids are made afresh
    assert sum(c.completion_tokens for c in ReplayedChoice.of(stored)) == 11


async def test_an_unfinished_or_failed_answer_is_not_stored() -> None:
    responses = cache()
    await drain(responses.recording(run(LIVE[:-1]), "partial", 2, 1, lambda: 1))
    assert await responses.lookup("partial") is None

    async def failing() -> AsyncIterator[Event]:
        yield TextDelta(0, "Hel")
        raise RuntimeError("job failed")

    with pytest.raises(RuntimeError):
        await drain(responses.recording(failing(), "failed", 1, 1, lambda: 1))
    assert await responses.lookup("failed") is None
    # A client that leaves mid-stream: the recording is closed before its end.
    recording = responses.recording(run(LIVE), "left", 2, 1, lambda: 1)
    await anext(recording)
    await recording.aclose()  # type: ignore[attr-defined]
    assert await responses.lookup("left") is None


def test_stored_bytes_that_are_not_an_answer_read_as_a_miss() -> None:
    assert decode(b"not json") is None
    assert decode(b'{"choices": [[1]]}') is None
    builder = AnswerBuilder(1)
    builder.add(TextDelta(0, "x"))
    builder.add(ChoiceEnd(0, "length"))
    answer = decode(encode(builder.answer(1, 2)))
    assert answer is not None and answer.choices[0].reason == "length"


async def test_the_memory_store_keeps_its_caps_and_ttl() -> None:
    now = [0.0]
    store = MemoryStore(max_entries=2, max_bytes=10, ttl=5, clock=lambda: now[0])
    await store.put("a", b"1234")
    await store.put("b", b"1234")
    assert await store.get("a") == b"1234"  # a is now the most recently used
    await store.put("c", b"1234")  # three entries: b, the least recently used, goes
    assert (await store.get("b"), len(store)) == (None, 2)
    await store.put("d", b"123456789")  # over 10 bytes: the oldest go until it fits
    assert len(store) == 1 and store.bytes == 9
    await store.put("huge", b"x" * 11)  # larger than the whole cache: not kept
    assert await store.get("huge") is None
    now[0] = 5.0
    assert await store.get("d") is None and store.bytes == 0


def _policy(cache_: ResponseCache, key: Any, model: Any, header: str = "") -> Any:
    said = cache_directives({"cache-control": header} if header else {})
    return cache_.policy(key, model, no_cache="no-cache" in said, no_store="no-store" in said)


def test_policy_per_model_key_and_cache_control() -> None:
    responses = cache(models=("other",))
    m, plain, other = MODELS
    opted_out = KEY.model_copy(update={"cache": False})
    assert _policy(responses, KEY, m).read  # the model says cache: true
    assert not _policy(responses, KEY, plain).active  # not listed, no flag
    assert _policy(responses, KEY, other).active  # listed in cache.models
    assert not _policy(responses, opted_out, m).active
    no_cache = _policy(responses, KEY, m, "no-cache")
    assert (no_cache.read, no_cache.store) == (False, True)
    no_store = _policy(responses, KEY, m, "max-age=0, No-Store")
    assert (no_store.read, no_store.store) == (True, False)
    assert _policy(cache(models=("*",)), KEY, plain).active
    assert _policy(cache(models=("other-alias",)), KEY, other).active


def test_entries_are_per_upstream_account_unless_the_scope_is_global() -> None:
    per_account, shared = cache(), cache(scope="global")
    assert per_account.entry_key(plan(), "team-a") != per_account.entry_key(plan(), "team-b")
    assert shared.entry_key(plan(), "team-a") == shared.entry_key(plan(), "team-b")
    assert cache_key(plan(), "team-a") != cache_key(plan(), "team-b")  # jobs: per account


async def test_an_answer_larger_than_max_entry_bytes_is_not_stored() -> None:
    responses = cache(max_entry_bytes=256)
    events: list[Event] = [TextDelta(0, "x" * 300), ChoiceEnd(0, "stop")]
    await drain(responses.recording(run(events), "big", 1, 1, lambda: 1))
    assert await responses.lookup("big") is None
