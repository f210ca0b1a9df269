"""End to end: batched submissions, the response cache and shared jobs, with the openai SDK.

A private emulator and gateways per module, so the emulator's counters of submissions and
jobs are this module's own (``POST /emulator/stats/reset`` before each test). The Redis test
uses database 6 of ``REDIS_URL``'s server, under a prefix of its own that it removes.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import anthropic
import httpx
import openai
import pytest
import redis

from gateway.emulator import reply_for
from tests.e2e.conftest import emulator_stats, job_prompt
from tests.e2e.servers import (
    ALICE_KEY,
    ALICE_TOKEN,
    BOB_KEY,
    BOB_TOKEN,
    Server,
    gateway_config,
    running,
    start_emulator,
    start_gateway,
)

CAROL_KEY = "sk-test-carol-0123456789"


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running(start_emulator(tmp_path_factory.mktemp("economy-emulator"))) as server:
        yield server


def redis_db6() -> str | None:
    url = os.environ.get("REDIS_URL")
    if not url:
        return None
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/6", parts.query, parts.fragment))


REDIS = redis_db6()
PREFIX = f"test-cache-{uuid.uuid4().hex[:8]}:"


def economy_config(emulator: Server) -> dict[str, object]:
    """Caching on for gemma-2b (in Redis when there is one); bob's key opts out."""
    cache: dict[str, object] = {"models": ["gemma-2b"]}
    if REDIS is not None:
        cache |= {"backend": "redis", "redis_url": REDIS, "prefix": PREFIX}
    return gateway_config(
        emulator.url,
        upstream={
            "base_url": emulator.url,
            "poll_interval": 0.05,
        },
        cache=cache,
        keys=[
            {"name": "alice", "key": ALICE_KEY, "upstream_token": ALICE_TOKEN},
            {"name": "bob", "key": BOB_KEY, "upstream_token": BOB_TOKEN, "cache": False},
            {"name": "carol", "key": CAROL_KEY, "upstream_token": ALICE_TOKEN, "rpm": 2},
        ],
    )


@pytest.fixture(scope="module")
def gateway(emulator: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One gateway for every test here: batching, the cache and shared jobs together."""
    tmp = tmp_path_factory.mktemp("economy-gateway")
    try:
        with running(start_gateway(tmp, economy_config(emulator))) as server:
            yield server
    finally:
        if REDIS is not None:
            store = redis.Redis.from_url(REDIS)
            keys = list(store.scan_iter(match=PREFIX + "*"))
            if keys:
                store.delete(*keys)
            store.close()


@pytest.fixture(autouse=True)
def fresh_counts(emulator: Server) -> Iterator[None]:
    httpx.delete(emulator.url + "/emulator/faults")
    httpx.post(emulator.url + "/emulator/stats/reset")
    yield
    httpx.delete(emulator.url + "/emulator/faults")


def async_client(gateway: Server, key: str = ALICE_KEY) -> openai.AsyncOpenAI:
    http = httpx.AsyncClient(limits=httpx.Limits(max_connections=200), timeout=60)
    return openai.AsyncOpenAI(
        base_url=gateway.url + "/v1", api_key=key, max_retries=0, http_client=http
    )


def metrics_text(server: Server) -> str:
    return httpx.get(server.url + "/metrics").text


def unique(text: str) -> str:
    """A prompt no other test (or earlier run against a shared Redis) has asked."""
    return f"{text} {uuid.uuid4().hex} [[emulate:words 5]]"


async def ask(
    client: openai.AsyncOpenAI, prompt: str, *, stream: bool = False, **headers: str
) -> tuple[str, str, str | None]:
    """(x-gateway-cache, x-job-id or "", the answer's text) of one chat request."""
    messages = [{"role": "user", "content": prompt}]
    extra = {"extra_headers": headers} if headers else {}
    if stream:
        async with client.chat.completions.with_streaming_response.create(
            model="gemma-2b",
            messages=messages,
            stream=True,
            **extra,  # type: ignore[arg-type]
        ) as raw:
            text = ""
            async for chunk in await raw.parse():
                if chunk.choices:
                    text += chunk.choices[0].delta.content or ""
            return raw.headers["x-gateway-cache"], raw.headers.get("x-job-id", ""), text
    answer = await client.chat.completions.with_raw_response.create(
        model="gemma-2b",
        messages=messages,
        **extra,  # type: ignore[arg-type]
    )
    content = answer.parse().choices[0].message.content
    return answer.headers["x-gateway-cache"], answer.headers.get("x-job-id", ""), content


async def test_a_hundred_different_requests_go_up_in_a_handful_of_submissions(
    gateway: Server, emulator: Server
) -> None:
    """Group commit: each submission takes 50 ms, as across a network; whoever arrives while
    one is in flight goes up in the next, so the count follows round trips, not requests."""
    slow = {"submit": {"delay": 0.05, "repeat": True}}
    async with httpx.AsyncClient() as http:
        (await http.post(emulator.url + "/emulator/faults", json=slow)).raise_for_status()
    client = async_client(gateway)

    async def ask(i: int) -> tuple[str, str | None]:
        raw = await client.chat.completions.with_raw_response.create(
            model="gemma-2b",
            messages=[{"role": "user", "content": f"Question number {i} [[emulate:words 6]]"}],
        )
        return raw.headers["x-job-id"], raw.parse().choices[0].message.content

    answers = await asyncio.gather(*(ask(i) for i in range(100)))
    stats = emulator_stats(emulator)
    assert stats["jobs_created"] == 100
    assert isinstance(stats["submit_requests"], int) and stats["submit_requests"] <= 10, stats
    async with httpx.AsyncClient() as http:  # one client: 100 lookups stay cheap
        for i, (job_id, text) in enumerate(answers):
            timeline = await http.get(f"{emulator.url}/emulator/jobs/{job_id}/timeline")
            prompt = timeline.json()["prompt"]
            assert f"Question number {i} " in prompt
            assert text == reply_for(prompt)
        metrics = (await http.get(gateway.url + "/metrics")).text
    assert "gateway_submission_inputs_sum 100.0" in metrics
    await client.close()


async def test_a_refused_batch_is_retried_one_by_one_and_fails_only_the_bad_input(
    gateway: Server, emulator: Server
) -> None:
    client = async_client(gateway)
    prompts = [f"Good question {i}" for i in range(4)] + ["A bad one [[emulate:reject]]"]

    async def ask(prompt: str) -> str | None:
        answer = await client.chat.completions.create(
            model="gemma-2b", messages=[{"role": "user", "content": prompt}]
        )
        return answer.choices[0].message.content

    # Group commit: the five gather into one batch behind a submission in flight, held 1 s.
    async with httpx.AsyncClient() as http:
        slow = {"submit": {"delay": 1.0}}
        (await http.post(emulator.url + "/emulator/faults", json=slow)).raise_for_status()
        holder = asyncio.ensure_future(ask("Hold the line"))
        while (await http.get(emulator.url + "/emulator/stats")).json()["submit_requests"] == 0:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    results = await asyncio.gather(*(ask(p) for p in prompts), return_exceptions=True)
    assert await holder
    bad = results[-1]
    assert isinstance(bad, openai.APIStatusError) and bad.status_code == 502
    assert "Invalid input format" in str(bad)
    assert all(isinstance(text, str) and text for text in results[:-1])
    stats = emulator_stats(emulator)
    # The holder's, the batch of five, then each member alone.
    assert stats["submit_requests"] == 1 + 1 + len(prompts)
    assert stats["jobs_created"] == 1 + len(prompts) - 1
    await client.close()


async def test_fifty_identical_requests_make_one_job_and_a_repeat_makes_no_request(
    gateway: Server, emulator: Server
) -> None:
    client = async_client(gateway)
    prompt = unique("The same question for everyone")
    answers = await asyncio.gather(*(ask(client, prompt, stream=i % 2 == 0) for i in range(50)))
    stats = emulator_stats(emulator)
    assert stats["jobs_created"] == 1 and stats["submit_requests"] == 1, stats
    # Each joined the one job, or (a request the client sent only once the job had ended, as
    # on a loaded machine) was answered from the cache it filled: no second job either way.
    missed = [job_id for result, job_id, _ in answers if result == "miss"]
    late = [job_id for result, job_id, _ in answers if result == "hit"]
    assert len(missed) + len(late) == 50 and set(late) <= {""}
    (job_id,) = set(missed)
    expected = reply_for(job_prompt(emulator, job_id))
    assert all(text == expected for _, _, text in answers)
    before = emulator_stats(emulator)
    for stream in (False, True):  # stored once, answered in either mode
        result, job_id, text = await ask(client, prompt, stream=stream)
        assert (result, job_id, text) == ("hit", "", expected)
    after = emulator_stats(emulator)
    assert after["submit_requests"] == before["submit_requests"]
    assert after["status_requests"] == before["status_requests"]
    metrics = metrics_text(gateway)
    assert f"gateway_shared_joins_total {len(missed) - 1}.0" in metrics
    assert f'gateway_cache_lookups_total{{result="hit"}} {len(late) + 2}.0' in metrics
    await client.close()


async def test_no_cache_asks_the_grid_again_and_no_store_keeps_the_answer_out(
    gateway: Server, emulator: Server
) -> None:
    client = async_client(gateway)
    kept = unique("Cached once")
    assert (await ask(client, kept))[0] == "miss"
    result, job_id, _ = await ask(client, kept, **{"cache-control": "no-cache"})
    assert result == "bypass" and job_id  # not read: a job of its own, which refreshes the entry
    assert (await ask(client, kept))[0] == "hit"
    private = unique("Never stored")
    for _ in range(2):
        result, job_id, _ = await ask(client, private, **{"cache-control": "no-store"})
        assert result == "miss" and job_id
    assert (await ask(client, private))[0] == "miss"  # the no-store answers were not kept
    assert emulator_stats(emulator)["jobs_created"] == 5
    await client.close()


async def test_a_legacy_completion_is_answered_from_the_cache_in_its_own_shape(
    gateway: Server, emulator: Server
) -> None:
    client = async_client(gateway)
    prompt = unique("Once upon a time")
    first = await client.completions.with_raw_response.create(model="gemma-2b", prompt=prompt)
    again = await client.completions.with_raw_response.create(
        model="gemma-2b", prompt=prompt, echo=True
    )
    assert (first.headers["x-gateway-cache"], again.headers["x-gateway-cache"]) == ("miss", "hit")
    text = first.parse().choices[0].text
    assert text == reply_for(job_prompt(emulator, first.headers["x-job-id"]))
    echoed = again.parse()
    assert echoed.object == "text_completion" and echoed.choices[0].text == prompt + text
    assert emulator_stats(emulator)["jobs_created"] == 1
    await client.close()


async def test_hits_count_in_the_keys_request_limits(gateway: Server) -> None:
    client = async_client(gateway, CAROL_KEY)
    prompt = unique("Asked three times")
    assert [(await ask(client, prompt))[0] for _ in range(2)] == ["miss", "hit"]
    with pytest.raises(openai.RateLimitError):
        await ask(client, prompt)
    await client.close()


async def test_the_messages_door_answers_a_hit_in_anthropic_shape_streamed_or_not(
    gateway: Server, emulator: Server
) -> None:
    sdk = anthropic.AsyncAnthropic(base_url=gateway.url, api_key=ALICE_KEY, max_retries=0)
    messages: list[anthropic.types.MessageParam] = [
        {"role": "user", "content": unique("Asked the Messages door")}
    ]
    first = await sdk.messages.with_raw_response.create(
        model="gemma-2b", max_tokens=1024, messages=messages
    )
    assert first.headers["x-gateway-cache"] == "miss"
    text = (await first.parse()).content[0].text  # type: ignore[union-attr]
    assert text == reply_for(job_prompt(emulator, first.headers["x-job-id"]))
    async with sdk.messages.stream(model="gemma-2b", max_tokens=1024, messages=messages) as stream:
        streamed = "".join([piece async for piece in stream.text_stream])
        final = await stream.get_final_message()
        assert stream.response.headers["x-gateway-cache"] == "hit"
    assert streamed == text and final.stop_reason == "end_turn"
    assert emulator_stats(emulator)["jobs_created"] == 1
    await sdk.close()


async def test_a_key_that_opts_out_bypasses_the_cache(gateway: Server, emulator: Server) -> None:
    prompt = unique("Asked by both")
    alice, bob = async_client(gateway), async_client(gateway, BOB_KEY)
    assert (await ask(alice, prompt))[0] == "miss"
    result, job_id, _ = await ask(bob, prompt)
    assert result == "bypass" and job_id
    assert emulator_stats(emulator)["jobs_created"] == 2
    await alice.close()
    await bob.close()


@pytest.mark.skipif(REDIS is None, reason="set REDIS_URL to share the cache in Redis")
async def test_with_redis_a_second_replica_answers_from_the_first_ones_answer(
    gateway: Server, emulator: Server, tmp_path_factory: pytest.TempPathFactory
) -> None:
    tmp = tmp_path_factory.mktemp("economy-replica")
    with running(start_gateway(tmp, economy_config(emulator))) as second:
        prompt = unique("Shared between replicas")
        one, two = async_client(gateway), async_client(second)
        result, job_id, text = await ask(one, prompt)
        assert result == "miss" and job_id
        assert await ask(two, prompt, stream=True) == ("hit", "", text)
        assert emulator_stats(emulator)["jobs_created"] == 1
        await one.close()
        await two.close()
    assert REDIS is not None
    store = redis.Redis.from_url(REDIS)
    assert list(store.scan_iter(match=PREFIX + "*"))  # the answers are kept there
    store.close()
