"""End to end: the official openai SDK against the gateway and the emulator, over loopback."""

from __future__ import annotations

import asyncio
import hashlib
import time

import httpx
import openai
import pytest

from gateway.emulator import reply_for
from tests.e2e.conftest import emulator_stats, job_prompt
from tests.e2e.servers import ALICE_KEY, ALICE_TOKEN, BOB_KEY, BOB_TOKEN, Server

USER = [{"role": "user", "content": "When does 1+1=10?"}]


def client(base_url: str, key: str = ALICE_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)


def test_models_are_listed_and_fetched(base_url: str) -> None:
    models = client(base_url).models.list()
    names = {m.id for m in models.data}
    assert {"gemma-2b", "gpt-3.5-turbo", "llama2-uncensored"} <= names
    model = client(base_url).models.retrieve("gemma-2b")
    assert model.id == "gemma-2b" and model.object == "model"
    with pytest.raises(openai.NotFoundError):
        client(base_url).models.retrieve("no-such-model")


def test_non_streamed_answer_is_what_the_emulator_wrote(base_url: str, emulator: Server) -> None:
    raw = client(base_url).chat.completions.with_raw_response.create(
        model="gemma-2b",
        messages=[{"role": "system", "content": "Be brief."}, *USER],
    )
    completion = raw.parse()
    job_id = raw.headers["x-job-id"]
    prompt = job_prompt(emulator, job_id)
    assert "Be brief." in prompt and "When does 1+1=10?" in prompt
    assert completion.choices[0].message.content == reply_for(prompt)
    assert completion.choices[0].finish_reason == "stop"
    assert completion.choices[0].message.role == "assistant"
    assert completion.object == "chat.completion"
    assert completion.model == "gemma-2b"
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    assert raw.headers["x-request-id"]


def test_stream_arrives_in_several_chunks_before_the_job_ends(
    base_url: str, emulator: Server
) -> None:
    stream = client(base_url).chat.completions.with_raw_response.create(
        model="gemma-2b",
        messages=[{"role": "user", "content": "Tell me a story [[emulate:words 40]]"}],
        stream=True,
    )
    job_id = stream.headers["x-job-id"]
    chunks = []
    first_text_at = None
    for chunk in stream.parse():
        chunks.append(chunk)
        if first_text_at is None and chunk.choices and chunk.choices[0].delta.content:
            first_text_at = time.time()
    timeline = httpx.get(f"{emulator.url}/emulator/jobs/{job_id}/timeline").json()
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reply_for(job_prompt(emulator, job_id))
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) >= 3
    assert first_text_at is not None and first_text_at < timeline["words"][-1]["at"]
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])


async def test_async_client_streams_too(base_url: str) -> None:
    async_client = openai.AsyncOpenAI(base_url=base_url, api_key=ALICE_KEY, max_retries=0)
    stream = await async_client.chat.completions.create(
        model="gemma-2b", messages=USER, stream=True
    )
    parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    assert "".join(parts)
    await async_client.close()


def test_two_keys_reach_the_upstream_with_their_own_tokens(base_url: str, emulator: Server) -> None:
    def count(token: str) -> int:
        digest = hashlib.sha256(token.encode()).hexdigest()[:12]
        by_token = emulator_stats(emulator)["submit_requests_by_token"]
        assert isinstance(by_token, dict)
        return int(by_token.get(digest, 0))

    before = count(ALICE_TOKEN), count(BOB_TOKEN)
    client(base_url, ALICE_KEY).chat.completions.create(model="gemma-2b", messages=USER)
    client(base_url, BOB_KEY).chat.completions.create(model="gemma-2b", messages=USER)
    client(base_url, BOB_KEY).chat.completions.create(model="gemma-2b", messages=USER)
    assert count(ALICE_TOKEN) - before[0] == 1
    assert count(BOB_TOKEN) - before[1] == 2


def test_bad_key_is_an_authentication_error(base_url: str) -> None:
    with pytest.raises(openai.AuthenticationError) as info:
        client(base_url, "sk-wrong-key-000").chat.completions.create(
            model="gemma-2b", messages=USER
        )
    assert info.value.status_code == 401
    assert ALICE_TOKEN not in str(info.value.body)


def test_missing_key_is_401_in_openai_shape(base_url: str) -> None:
    response = httpx.post(f"{base_url}/chat/completions", json={"model": "gemma-2b"})
    assert response.status_code == 401
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}


def test_unknown_model_is_not_found(base_url: str) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client(base_url).chat.completions.create(model="gpt-17", messages=USER)
    assert "gpt-17" in info.value.message


def test_failed_job_is_a_5xx_saying_the_job_failed(base_url: str) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        client(base_url).chat.completions.create(
            model="gemma-2b", messages=[{"role": "user", "content": "[[emulate:fail boom]]"}]
        )
    assert info.value.status_code == 502
    assert "failed" in info.value.message


def test_failed_job_while_streaming_raises_in_the_sdk(base_url: str) -> None:
    with pytest.raises(openai.APIError) as info:
        stream = client(base_url).chat.completions.create(
            model="gemma-2b",
            messages=[{"role": "user", "content": "[[emulate:fail boom]] [[emulate:queue 0]]"}],
            stream=True,
        )
        for _ in stream:
            pass
    assert "failed" in str(info.value)


def test_alias_names_the_same_model(base_url: str) -> None:
    completion = client(base_url).chat.completions.create(model="gpt-3.5-turbo", messages=USER)
    assert completion.model == "gemma-2b"
    assert completion.choices[0].message.content


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "gemma-2b"}, "messages"),
        ({"model": "gemma-2b", "messages": "hi"}, "messages"),
        (
            {"model": "gemma-2b", "messages": [{"role": "wizard", "content": "x"}]},
            "messages[0].role",
        ),
        ({"model": "gemma-2b", "messages": USER, "n": "many"}, "n"),
        ({"model": "gemma-2b", "messages": USER, "stream": "yes please"}, "stream"),
    ],
)
def test_wrong_types_are_400_naming_the_field(
    base_url: str, body: dict[str, object], param: str
) -> None:
    response = httpx.post(
        f"{base_url}/chat/completions", json=body, headers={"authorization": f"Bearer {ALICE_KEY}"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_malformed_json_is_400(base_url: str) -> None:
    response = httpx.post(
        f"{base_url}/chat/completions",
        content=b'{"model": ',
        headers={"authorization": f"Bearer {ALICE_KEY}", "content-type": "application/json"},
    )
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]["message"]


def test_image_parts_are_refused_with_a_clear_400(base_url: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client(base_url).chat.completions.create(
            model="gemma-2b",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {"type": "image_url", "image_url": {"url": "http://x/y.png"}},
                    ],
                }
            ],
        )
    assert "image_url" in info.value.message


def test_text_parts_are_joined(base_url: str, emulator: Server) -> None:
    raw = client(base_url).chat.completions.with_raw_response.create(
        model="gemma-2b",
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": "alpha "}, {"type": "text", "text": "beta"}],
            }
        ],
    )
    assert "alpha beta" in job_prompt(emulator, raw.headers["x-job-id"])


async def test_hundred_concurrent_streams_share_status_requests(
    base_url: str, emulator: Server
) -> None:
    async with httpx.AsyncClient() as http:
        await http.post(f"{emulator.url}/emulator/stats/reset")
    async_client = openai.AsyncOpenAI(base_url=base_url, api_key=ALICE_KEY, max_retries=0)

    async def one(i: int) -> str:
        stream = await async_client.chat.completions.create(
            model="gemma-2b",
            messages=[{"role": "user", "content": f"question {i} [[emulate:words 10]]"}],
            stream=True,
        )
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    texts = await asyncio.gather(*(one(i) for i in range(100)))
    await async_client.close()
    assert all(texts)
    stats = emulator_stats(emulator)
    # 100 jobs polled for ~1 s at 20 ticks/s would be ~2,000 status requests without coalescing
    assert int(stats["status_requests"]) < 200  # type: ignore[call-overload]
    assert int(stats["max_ids_per_status"]) >= 50  # type: ignore[call-overload]
