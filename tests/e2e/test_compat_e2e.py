"""End to end: OpenAI compatibility in depth, driven by the openai SDK over loopback.

Each test checks the text and the finish reason a client gets (known in advance from an
``[[emulate:reply ...]]`` directive or :func:`reply_for` of the prompt the upstream received),
not just that no exception was raised. Responses are also validated against the SDK's own
pydantic models (the SDK itself builds them without validation). LangChain and LlamaIndex are in
``test_frameworks_e2e.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from gateway.emulator import reply_for
from gateway.engine.tokens import count_tokens, truncate_to_tokens
from tests.e2e.conftest import emulator_stats, job_prompt
from tests.e2e.servers import ALICE_KEY, Server, gateway_config, running, start_gateway

ORIGIN = "http://app.example"
AUTH = {"authorization": f"Bearer {ALICE_KEY}"}
ONCE = "Once upon a time [[emulate:words 9]] [[emulate:queue 0]]"


# ----------------------------------------------------------------------------- helpers


def say(text: str, *, wps: float | None = None, queue: float = 0) -> str:
    """A prompt whose job answers exactly ``text`` (at ``wps`` words a second)."""
    prompt = f"Answer. [[emulate:reply {text}]] [[emulate:queue {queue:g}]]"
    return prompt + (f" [[emulate:wps {wps:g}]]" if wps else "")


def user(content: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": content}]


def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=ALICE_KEY, max_retries=0)


def aclient(base_url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base_url, api_key=ALICE_KEY, max_retries=0)


@contextlib.contextmanager
def submissions(emulator: Server) -> Iterator[dict[str, int]]:
    """Counts the submit requests and jobs the upstream saw inside the block."""
    before = emulator_stats(emulator)
    delta: dict[str, int] = {}
    yield delta
    after = emulator_stats(emulator)
    for name in ("submit_requests", "jobs_created"):
        delta[name] = int(after[name]) - int(before[name])  # type: ignore[call-overload]


def raw_sse(
    url: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[httpx.Response, list[Any], list[str]]:
    """POST a streamed request; its response, its ``data:`` payloads and its comment lines."""
    events: list[Any] = []
    comments: list[str] = []
    with httpx.stream(
        "POST", url, json=body, headers={**AUTH, **(headers or {})}, timeout=30
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                payload = line.removeprefix("data: ")
                events.append(payload if payload == "[DONE]" else json.loads(payload))
            elif line.startswith(":"):
                comments.append(line)
    return response, events, comments


def job_ids(headers: httpx.Headers) -> list[str]:
    return headers["x-job-id"].split(",")


def stream_texts(chunks: list[ChatCompletionChunk]) -> dict[int, str]:
    texts: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
    return texts


def finish_reasons(chunks: list[Any]) -> dict[int, list[str]]:
    reasons: dict[int, list[str]] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            if choice.finish_reason is not None:
                reasons.setdefault(choice.index, []).append(choice.finish_reason)
    return reasons


@pytest.fixture(scope="module")
def special(emulator: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A gateway with CORS, a small ``max_n``, aliases and per-model defaults."""
    config = gateway_config(
        emulator.url,
        server={"cors_origins": [ORIGIN]},
        models=[
            {"name": "gemma-2b", "tag": "gemma:2b", "aliases": ["gpt-4o-mini", "gpt-3.5-turbo"]},
            {"name": "terse", "tag": "gemma:2b", "max_tokens": 3},
            {"name": "hasty", "tag": "gemma:2b", "deadline": 1.0},
            {"name": "llama", "tag": "llama2-uncensored", "template": "llama2"},
        ],
        limits={"max_n": 3, "keepalive_interval": 0.3, "default_deadline": 30},
    )
    tmp: Path = tmp_path_factory.mktemp("compat-gateway")
    with running(start_gateway(tmp, config)) as server:
        yield server


# ----------------------------------------------------------------------------- response fields


def test_response_fields_and_typed_models(base_url: str, emulator: Server) -> None:
    before = time.time()
    raw = client(base_url).chat.completions.with_raw_response.create(
        model="gemma-2b",
        messages=user("Say something. [[emulate:words 8]] [[emulate:queue 0]]"),
        extra_headers={"x-request-id": "trace-compat-1"},
    )
    body = raw.http_response.json()
    completion = ChatCompletion.model_validate(body)  # validates, unlike the SDK's own parse
    assert raw.parse().model_dump() == completion.model_dump()
    assert completion.id.startswith("chatcmpl-")
    assert completion.object == "chat.completion"
    assert before - 5 <= completion.created <= time.time() + 5
    assert completion.model == "gemma-2b"
    assert completion.system_fingerprint == "fp_gateway"
    assert raw.headers["x-request-id"] == "trace-compat-1"
    assert raw.parse()._request_id == "trace-compat-1"  # what the SDK shows for support tickets
    (choice,) = completion.choices
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert choice.message.content == reply_for(job_prompt(emulator, raw.headers["x-job-id"]))
    assert choice.finish_reason == "stop"
    # A request without its own id gets one.
    other = client(base_url).chat.completions.with_raw_response.create(
        model="gemma-2b", messages=user(say("ok"))
    )
    assert other.headers["x-request-id"].startswith("req_")
    assert other.parse().id != completion.id


def test_streamed_chunks_validate_and_share_one_id(base_url: str) -> None:
    body = {"model": "gemma-2b", "messages": user(say("one two three four")), "stream": True}
    response, events, _ = raw_sse(f"{base_url}/chat/completions", body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-request-id"]
    assert events[-1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate(e) for e in events[:-1]]
    assert {c.id for c in chunks} == {chunks[0].id} and chunks[0].id.startswith("chatcmpl-")
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert {c.created for c in chunks} == {chunks[0].created}
    assert {(c.model, c.system_fingerprint) for c in chunks} == {("gemma-2b", "fp_gateway")}
    assert chunks[0].choices[0].delta.role == "assistant"
    assert stream_texts(chunks) == {0: "one two three four"}
    assert finish_reasons(chunks) == {0: ["stop"]}
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_completions_fields_and_typed_models(base_url: str, emulator: Server) -> None:
    raw = client(base_url).completions.with_raw_response.create(model="gemma-2b", prompt=ONCE)
    completion = Completion.model_validate(raw.http_response.json())
    assert completion.id.startswith("cmpl-")
    assert completion.object == "text_completion"
    assert completion.model == "gemma-2b"
    assert completion.system_fingerprint == "fp_gateway"
    assert abs(completion.created - time.time()) < 60
    assert raw.headers["x-request-id"]
    assert job_prompt(emulator, raw.headers["x-job-id"]) == ONCE
    assert completion.choices[0].text == reply_for(ONCE)
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == count_tokens(ONCE)


# ----------------------------------------------------------------------------- n


def test_n_choices_come_from_one_submission(base_url: str, emulator: Server) -> None:
    with submissions(emulator) as seen:
        raw = client(base_url).chat.completions.with_raw_response.create(
            model="gemma-2b",
            messages=user("Three things [[emulate:words 7]] [[emulate:queue 0]]"),
            n=3,
        )
    assert seen == {"submit_requests": 1, "jobs_created": 3}
    completion = ChatCompletion.model_validate(raw.http_response.json())
    ids = job_ids(raw.headers)
    assert len(ids) == 3
    prompt = job_prompt(emulator, ids[0])
    assert all(job_prompt(emulator, i) == prompt for i in ids)
    assert [c.index for c in completion.choices] == [0, 1, 2]
    replies = [reply_for(prompt, variant=i) for i in range(3)]
    assert len(set(replies)) == 3  # each choice its own text, so choices cannot be mixed up
    assert [c.message.content for c in completion.choices] == replies
    assert all(c.finish_reason == "stop" for c in completion.choices)
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == count_tokens(prompt)  # the prompt counts once
    assert completion.usage.completion_tokens == sum(count_tokens(r) for r in replies)
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )


async def test_n_streamed_chunks_carry_their_index(base_url: str, emulator: Server) -> None:
    api = aclient(base_url)
    with submissions(emulator) as seen:
        stream = await api.chat.completions.create(
            model="gemma-2b",
            messages=user(say("red green blue yellow", wps=20)),
            n=2,
            stream=True,
        )
        chunks = [chunk async for chunk in stream]
    await api.close()
    assert seen == {"submit_requests": 1, "jobs_created": 2}
    roles = [c.choices[0].index for c in chunks if c.choices and c.choices[0].delta.role]
    assert sorted(roles) == [0, 1]
    assert stream_texts(chunks) == {0: "red green blue yellow", 1: "red green blue yellow"}
    assert finish_reasons(chunks) == {0: ["stop"], 1: ["stop"]}
    assert all(len(c.choices) == 1 for c in chunks)  # no usage chunk: it was not asked for


def test_n_above_the_configured_maximum_is_400(
    base_url: str, special: Server, emulator: Server
) -> None:
    with submissions(emulator) as seen:
        with pytest.raises(openai.BadRequestError) as small:
            client(special.url + "/v1").chat.completions.create(
                model="gemma-2b", messages=user("hi"), n=4
            )
        with pytest.raises(openai.BadRequestError) as default:
            client(base_url).chat.completions.create(model="gemma-2b", messages=user("hi"), n=9)
        with pytest.raises(openai.BadRequestError) as text:
            client(special.url + "/v1").completions.create(model="gemma-2b", prompt=["a", "b"], n=2)
    assert seen == {"submit_requests": 0, "jobs_created": 0}
    for info, limit in ((small, 3), (default, 8), (text, 3)):
        assert info.value.param == "n"
        assert f"at most {limit}" in info.value.message
    # At the maximum it is fine.
    completion = client(special.url + "/v1").chat.completions.create(
        model="gemma-2b", messages=user(say("fine")), n=3
    )
    assert [c.message.content for c in completion.choices] == ["fine"] * 3


# ----------------------------------------------------------------------------- stop


@pytest.mark.parametrize("stop", ["END OF", ["###", "END OF"]])
def test_stop_cuts_the_non_streamed_text(base_url: str, stop: str | list[str]) -> None:
    completion = client(base_url).chat.completions.create(
        model="gemma-2b",
        messages=user(say("We reach the END IS NEAR part, then END OF story, more words")),
        stop=stop,
    )
    assert completion.choices[0].message.content == "We reach the END IS NEAR part, then "
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == count_tokens(
        "We reach the END IS NEAR part, then "
    )


def test_streamed_stop_never_leaks_and_ends_before_the_job(base_url: str, emulator: Server) -> None:
    # One word per poll or so: "END" and " OF" reach the gateway in different polls, and the
    # false alarm "END IS" must be released; 30 words after the stop keep the job running.
    tail = " ".join(["filler"] * 30)
    reply = f"We reach the END IS NEAR part, then END OF story {tail}"
    raw = client(base_url).chat.completions.with_raw_response.create(
        model="gemma-2b", messages=user(say(reply, wps=12)), stop=["END OF", "\n\n"], stream=True
    )
    chunks = list(raw.parse())
    ended_at = time.time()
    timeline = httpx.get(f"{emulator.url}/emulator/jobs/{raw.headers['x-job-id']}/timeline").json()
    words = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert len(words) >= 4  # really streamed, a few words at a time
    text = ""
    for word in words:
        text += word
        assert "END OF" not in text
    assert text == "We reach the END IS NEAR part, then "
    assert finish_reasons(chunks) == {0: ["stop"]}
    assert chunks[-1].choices[0].finish_reason == "stop"
    # The answer ended at the stop, seconds before the job itself did.
    assert ended_at < timeline["ended"]


async def test_async_streamed_stop_split_across_polls(base_url: str) -> None:
    api = aclient(base_url)
    stream = await api.chat.completions.create(
        model="gemma-2b",
        messages=user(say("alpha beta gamma. User: delta epsilon", wps=15)),
        stop=[". User:", "zzz"],
        stream=True,
    )
    chunks = [chunk async for chunk in stream]
    await api.close()
    assert stream_texts(chunks) == {0: "alpha beta gamma"}
    assert finish_reasons(chunks) == {0: ["stop"]}


def test_too_many_stop_sequences_is_400(base_url: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client(base_url).chat.completions.create(
            model="gemma-2b", messages=user("hi"), stop=["a", "b", "c", "d", "e"]
        )
    assert info.value.param == "stop"


# ----------------------------------------------------------------------------- max_tokens


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_cuts_exactly(base_url: str, emulator: Server, field: str) -> None:
    raw = client(base_url).chat.completions.with_raw_response.create(
        model="gemma-2b",
        messages=user("A long story please [[emulate:words 30]] [[emulate:queue 0]]"),
        **{field: 7},  # type: ignore[arg-type]
    )
    completion = raw.parse()
    reply = reply_for(job_prompt(emulator, raw.headers["x-job-id"]))
    assert completion.choices[0].message.content == truncate_to_tokens(reply, 7)
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 7


def test_max_completion_tokens_wins_over_max_tokens(base_url: str) -> None:
    reply = "one two three four five six seven eight nine ten"
    completion = client(base_url).chat.completions.create(
        model="gemma-2b", messages=user(say(reply)), max_tokens=8, max_completion_tokens=3
    )
    assert completion.choices[0].message.content == truncate_to_tokens(reply, 3)
    assert completion.choices[0].finish_reason == "length"


def test_a_limit_the_text_does_not_reach_is_a_normal_stop(base_url: str) -> None:
    completion = client(base_url).chat.completions.create(
        model="gemma-2b", messages=user(say("short")), max_tokens=50
    )
    assert completion.choices[0].message.content == "short"
    assert completion.choices[0].finish_reason == "stop"


def test_streamed_max_tokens_ends_as_soon_as_reached(base_url: str, emulator: Server) -> None:
    raw = client(base_url).chat.completions.with_raw_response.create(
        model="gemma-2b",
        messages=user("Go on [[emulate:words 40]] [[emulate:wps 12]] [[emulate:queue 0]]"),
        max_completion_tokens=5,
        stream=True,
    )
    chunks = list(raw.parse())
    ended_at = time.time()
    job_id = raw.headers["x-job-id"]
    timeline = httpx.get(f"{emulator.url}/emulator/jobs/{job_id}/timeline").json()
    reply = reply_for(job_prompt(emulator, job_id))
    assert stream_texts(chunks) == {0: truncate_to_tokens(reply, 5)}
    assert finish_reasons(chunks) == {0: ["length"]}
    assert ended_at < timeline["ended"]


def test_max_tokens_above_the_limit_is_400(base_url: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client(base_url).chat.completions.create(
            model="gemma-2b", messages=user("hi"), max_completion_tokens=10**6
        )
    assert info.value.param == "max_completion_tokens"


# ----------------------------------------------------------------------------- usage


def test_usage_chunk_only_when_asked(base_url: str, emulator: Server) -> None:
    messages = user(say("a b c d e f"))
    plain = list(
        client(base_url).chat.completions.create(model="gemma-2b", messages=messages, stream=True)
    )
    assert all(c.choices and c.usage is None for c in plain)  # `chunk.choices[0]` loops work
    raw = client(base_url).chat.completions.with_raw_response.create(
        model="gemma-2b",
        messages=messages,
        n=2,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(raw.parse())
    *body, last = chunks
    assert last.choices == [] and last.usage is not None
    assert all(c.choices and c.usage is None for c in body)
    prompt = job_prompt(emulator, job_ids(raw.headers)[0])
    assert last.usage.prompt_tokens == count_tokens(prompt)
    assert last.usage.completion_tokens == 2 * count_tokens("a b c d e f")
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert stream_texts(body) == {0: "a b c d e f", 1: "a b c d e f"}


# ----------------------------------------------------------------------------- parameters


def test_sampling_and_bookkeeping_params_are_accepted(base_url: str, emulator: Server) -> None:
    with submissions(emulator) as seen:
        completion = client(base_url).chat.completions.create(
            model="gemma-2b",
            messages=[
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": say("accepted")},
            ],
            temperature=0.2,
            top_p=0.9,
            seed=42,
            presence_penalty=0.5,
            frequency_penalty=0.5,
            logit_bias={"50256": -100},
            user="user-1234",
            metadata={"team": "a"},
            store=False,
            service_tier="auto",
            reasoning_effort="low",
            logprobs=False,
            response_format={"type": "text"},
            modalities=["text"],
            prediction={"type": "content", "content": "accepted"},
            extra_body={"top_k": 40, "repetition_penalty": 1.1, "no_such_field": {"x": [1, None]}},
        )
    assert seen == {"submit_requests": 1, "jobs_created": 1}
    assert completion.choices[0].message.content == "accepted"
    assert completion.choices[0].finish_reason == "stop"


_IMAGE = {"type": "image_url", "image_url": {"url": "https://example.invalid/cat.png"}}
_AUDIO = {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}


@pytest.mark.parametrize(
    ("kwargs", "param", "word"),
    [
        ({"logprobs": True}, "logprobs", "logprobs"),
        ({"logprobs": True, "top_logprobs": 2}, "logprobs", "logprobs"),
        ({"audio": {"voice": "alloy", "format": "wav"}}, "audio", "Audio"),
        ({"modalities": ["text", "audio"]}, "audio", "Audio"),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}, _IMAGE]}]},
            "messages[0].content[1]",
            "image_url",
        ),
        (
            {"messages": [{"role": "user", "content": [_AUDIO]}]},
            "messages[0].content[0]",
            "input_audio",
        ),
    ],
)
def test_params_that_would_change_the_answer_are_400(
    base_url: str, emulator: Server, kwargs: dict[str, Any], param: str, word: str
) -> None:
    request: dict[str, Any] = {"model": "gemma-2b", "messages": user("hi"), **kwargs}
    with submissions(emulator) as seen, pytest.raises(openai.BadRequestError) as info:
        client(base_url).chat.completions.create(**request)
    assert seen == {"submit_requests": 0, "jobs_created": 0}
    assert info.value.status_code == 400
    assert info.value.param == param
    assert word in info.value.message
    assert isinstance(info.value.body, dict) and info.value.body.get("type")


def test_completions_logprobs_and_token_prompts_are_400(base_url: str) -> None:
    with pytest.raises(openai.BadRequestError) as logprobs:
        client(base_url).completions.create(model="gemma-2b", prompt="hi", logprobs=2)
    assert logprobs.value.param == "logprobs"
    with pytest.raises(openai.BadRequestError) as tokens:
        client(base_url).completions.create(model="gemma-2b", prompt=[1, 2, 3])
    assert tokens.value.param == "prompt"


_ODD_BODIES: list[dict[str, Any]] = [
    {"temperature": "hot", "top_p": [1], "seed": "x", "user": {"a": 1}, "metadata": [1, 2]},
    {"weird": {"deep": [{"er": None}]}, "another": True, "x-y": 1.5},
    {"stop": None, "max_tokens": None, "tools": None, "response_format": None, "audio": None},
    {"stream_options": {"include_usage": True, "extra": 1}, "tool_choice": "none", "tools": []},
    {"messages": [{"role": "assistant", "content": None, "refusal": None}, *user("hi")]},
    {"messages": [{"role": "tool", "content": "42", "tool_call_id": "call_1"}, *user("hi")]},
    {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "extra": 1}]}]},
    {"messages": [{"role": "user", "content": "hi", "name": "bob", "whatever": [None]}]},
    {"stop": [1, 2]},
    {"stop": {"a": 1}},
    {"n": -1},
    {"n": 1.5},
    {"max_tokens": -5},
    {"max_tokens": "lots"},
    {"stream_options": "yes"},
    {"messages": [{"role": "user"}]},
    {"messages": [{"content": "no role"}]},
    {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
    {"messages": [{"role": "user", "content": [{"text": "no type"}]}]},
    {"messages": [{"role": "user", "content": 42}]},
    {"messages": [None]},
    {"messages": {}},
    {"model": None},
    {"model": ["gemma-2b"]},
    {"response_format": {"type": "bogus"}},
    {"tool_choice": {"type": "function"}},
    {"logprobs": "yes"},
    {"stream": 1, "stream_options": None},
]


@pytest.mark.parametrize("route", ["chat/completions", "completions"])
async def test_unknown_or_odd_fields_never_cause_a_5xx(base_url: str, route: str) -> None:
    base: dict[str, Any] = {"model": "gemma-2b", "max_tokens": 2}
    if route == "chat/completions":
        base["messages"] = user(say("x y z"))
    else:
        base["prompt"] = say("x y z")

    async def send(http: httpx.AsyncClient, extra: dict[str, Any]) -> httpx.Response:
        return await http.post(f"{base_url}/{route}", json={**base, **extra}, headers=AUTH)

    async with httpx.AsyncClient(timeout=30) as http:
        answers = await asyncio.gather(*(send(http, extra) for extra in _ODD_BODIES))
    for extra, response in zip(_ODD_BODIES, answers, strict=True):
        assert response.status_code < 500, (extra, response.text)
        if response.status_code == 200:
            if response.headers["content-type"].startswith("text/event-stream"):
                assert response.text.rstrip().endswith("data: [DONE]"), extra
            else:
                model = ChatCompletion if route == "chat/completions" else Completion
                model.model_validate(response.json())
        else:
            error = response.json()["error"]
            assert set(error) == {"message", "type", "param", "code"}, extra
            assert error["message"]


@pytest.mark.parametrize(
    ("route", "field"),
    [
        ("chat/completions", "n"),
        ("chat/completions", "stream"),
        ("completions", "echo"),
        ("chat/completions", "stream_options.include_usage"),
    ],
)
def test_explicit_nulls_mean_the_default(base_url: str, route: str, field: str) -> None:
    body: dict[str, Any] = {"model": "gemma-2b"}
    if route == "chat/completions":
        body["messages"] = user(say("null ok"))
    else:
        body["prompt"] = say("null ok")
    if field == "stream_options.include_usage":
        body["stream_options"] = {"include_usage": None}
    else:
        body[field] = None
    response = httpx.post(f"{base_url}/{route}", json=body, headers=AUTH, timeout=30)
    assert response.status_code == 200, response.text


# ----------------------------------------------------------------------------- /v1/completions


def test_completions_prompt_list_is_one_submission(base_url: str, emulator: Server) -> None:
    prompts = [
        "First: [[emulate:words 5]]",
        "Second: [[emulate:words 7]]",
        "Third [[emulate:words 3]]",
    ]
    with submissions(emulator) as seen:
        raw = client(base_url).completions.with_raw_response.create(
            model="gemma-2b", prompt=prompts
        )
    assert seen == {"submit_requests": 1, "jobs_created": 3}
    completion = Completion.model_validate(raw.http_response.json())
    ids = job_ids(raw.headers)
    assert [job_prompt(emulator, i) for i in ids] == prompts  # raw prompts, no chat template
    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert [c.text for c in completion.choices] == [reply_for(p) for p in prompts]
    assert [c.finish_reason for c in completion.choices] == ["stop"] * 3
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == sum(count_tokens(p) for p in prompts)
    assert completion.usage.completion_tokens == sum(count_tokens(reply_for(p)) for p in prompts)


def test_completions_n_times_prompts_in_prompt_major_order(base_url: str, emulator: Server) -> None:
    prompts = [say("from A"), say("from B")]
    with submissions(emulator) as seen:
        raw = client(base_url).completions.with_raw_response.create(
            model="gemma-2b", prompt=prompts, n=2
        )
    assert seen == {"submit_requests": 1, "jobs_created": 4}
    completion = raw.parse()
    assert [job_prompt(emulator, i) for i in job_ids(raw.headers)] == [
        prompts[0],
        prompts[0],
        prompts[1],
        prompts[1],
    ]
    assert [(c.index, c.text) for c in completion.choices] == [
        (0, "from A"),
        (1, "from A"),
        (2, "from B"),
        (3, "from B"),
    ]


def test_completions_stream_with_stop_max_tokens_and_usage(base_url: str, emulator: Server) -> None:
    long = "one two three four five six seven eight nine ten eleven twelve"
    prompts = [say("keep this STOP not this", wps=15), say(long, wps=15)]
    with submissions(emulator) as seen:
        raw = client(base_url).completions.with_raw_response.create(
            model="gemma-2b",
            prompt=prompts,
            stop="STOP",
            max_tokens=6,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(raw.parse())
    assert seen == {"submit_requests": 1, "jobs_created": 2}
    *body, last = chunks
    texts: dict[int, str] = {}
    for chunk in body:  # (the SDK's Completion type does not allow the null finish_reason
        (choice,) = chunk.choices  # of a chunk that OpenAI streams too, so no validation here)
        texts[choice.index] = texts.get(choice.index, "") + choice.text
    assert texts == {0: "keep this ", 1: truncate_to_tokens(long, 6)}
    assert finish_reasons(body) == {0: ["stop"], 1: ["length"]}
    assert last.choices == [] and last.usage is not None
    assert last.usage.prompt_tokens == sum(count_tokens(p) for p in prompts)
    assert last.usage.completion_tokens == count_tokens("keep this ") + 6


@pytest.mark.parametrize("stream", [False, True])
def test_completions_echo_puts_the_prompt_first(base_url: str, stream: bool) -> None:
    prompt = say("and the rest")
    api = client(base_url)
    if stream:
        chunks = list(
            api.completions.create(model="gemma-2b", prompt=prompt, echo=True, stream=True)
        )
        text = "".join(c.choices[0].text for c in chunks)
        reason = chunks[-1].choices[0].finish_reason
        assert chunks[0].choices[0].text == prompt  # the echo comes first, on its own
    else:
        completion = api.completions.create(model="gemma-2b", prompt=prompt, echo=True)
        text, reason = completion.choices[0].text, completion.choices[0].finish_reason
        assert completion.usage is not None
        assert completion.usage.completion_tokens == count_tokens("and the rest")
    assert text == prompt + "and the rest"
    assert reason == "stop"


async def test_completions_async_client(base_url: str) -> None:
    api = aclient(base_url)
    completion = await api.completions.create(model="gemma-2b", prompt=say("async text"))
    stream = await api.completions.create(model="gemma-2b", prompt=say("async chunks"), stream=True)
    streamed = "".join([c.choices[0].text async for c in stream if c.choices])
    await api.close()
    assert completion.choices[0].text == "async text"
    assert streamed == "async chunks"


# ----------------------------------------------------------------------------- other routes

_BINARY = ("speech.wav", b"RIFF0000WAVEfmt ", "audio/wav")

_OTHER_ROUTES: list[tuple[str, Callable[[openai.OpenAI], object]]] = [
    ("embeddings", lambda c: c.embeddings.create(model="gemma-2b", input="hello")),
    ("images", lambda c: c.images.generate(model="dall-e-3", prompt="a cat")),
    ("speech", lambda c: c.audio.speech.create(model="tts-1", voice="alloy", input="hi")),
    (
        "transcriptions",
        lambda c: c.audio.transcriptions.create(model="whisper-1", file=_BINARY),
    ),
    ("moderations", lambda c: c.moderations.create(input="hello")),
    ("fine_tuning", lambda c: c.fine_tuning.jobs.list()),
    ("vector_stores", lambda c: c.vector_stores.list()),
    ("assistants", lambda c: c.beta.assistants.list()),
    ("threads", lambda c: c.beta.threads.create()),
    ("containers", lambda c: c.containers.list()),
    ("conversations", lambda c: c.conversations.create()),
    ("videos", lambda c: c.videos.list()),
    ("evals", lambda c: c.evals.list()),
    ("skills", lambda c: c.skills.list()),
    ("organization", lambda c: c.get("/organization/users", cast_to=object)),
]


@pytest.mark.parametrize(("name", "call"), _OTHER_ROUTES, ids=[n for n, _ in _OTHER_ROUTES])
def test_other_openai_routes_say_the_service_does_not_offer_them(
    base_url: str, name: str, call: Callable[[openai.OpenAI], object]
) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        call(client(base_url))
    assert info.value.status_code == 404
    assert "not offered" in info.value.message
    assert "/v1/chat/completions" in info.value.message
    assert info.value.code == "unsupported_endpoint"
    assert info.value.response.headers["content-type"].startswith("application/json")
    assert info.value.request_id  # x-request-id, on errors too


@pytest.mark.parametrize("path", ["/v1/no-such-thing", "/v2/chat/completions", "/v2"])
def test_unknown_paths_get_an_openai_shaped_404(base_url: str, path: str) -> None:
    root = base_url.removesuffix("/v1")
    response = httpx.get(root + path, headers=AUTH)
    assert response.status_code == 404
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert path in error["message"]


def test_a_served_route_with_the_wrong_method_is_405(base_url: str) -> None:
    response = httpx.get(f"{base_url}/chat/completions", headers=AUTH)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


# ----------------------------------------------------------------------------- models


def test_aliases_answer_as_the_model(special: Server) -> None:
    api = client(special.url + "/v1")
    names = {m.id for m in api.models.list().data}
    assert {"gemma-2b", "gpt-4o-mini", "gpt-3.5-turbo", "terse", "hasty", "llama"} <= names
    for alias in ("gpt-4o-mini", "gpt-3.5-turbo"):
        completion = api.chat.completions.create(model=alias, messages=user(say("aliased")))
        assert completion.model == "gemma-2b"
        assert completion.choices[0].message.content == "aliased"
        text = api.completions.create(model=alias, prompt=say("aliased too"))
        assert text.choices[0].text == "aliased too"


def test_per_model_max_tokens_default(special: Server) -> None:
    api = client(special.url + "/v1")
    reply = "alpha beta gamma delta epsilon zeta eta theta"
    default = api.chat.completions.create(model="terse", messages=user(say(reply)))
    assert default.choices[0].message.content == truncate_to_tokens(reply, 3)
    assert default.choices[0].finish_reason == "length"
    explicit = api.chat.completions.create(model="terse", messages=user(say(reply)), max_tokens=6)
    assert explicit.choices[0].message.content == truncate_to_tokens(reply, 6)
    text = api.completions.create(model="terse", prompt=say(reply))
    assert text.choices[0].text == truncate_to_tokens(reply, 3)
    assert text.choices[0].finish_reason == "length"


def test_per_model_template(special: Server, emulator: Server) -> None:
    raw = client(special.url + "/v1").chat.completions.with_raw_response.create(
        model="llama",
        messages=[{"role": "system", "content": "Be kind."}, *user(say("templated"))],
    )
    prompt = job_prompt(emulator, raw.headers["x-job-id"])
    assert prompt.startswith("[INST]") and "Be kind." in prompt and prompt.endswith("[/INST]")
    assert raw.parse().choices[0].message.content == "templated"


def test_per_model_deadline(special: Server) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        client(special.url + "/v1").chat.completions.create(
            model="hasty", messages=user(say("too late", queue=8))
        )
    assert info.value.status_code == 504
    assert "deadline of 1 s" in info.value.message
    assert "had not started" in info.value.message


def test_keepalives_do_not_extend_the_deadline(special: Server) -> None:
    body = {"model": "hasty", "messages": user(say("too late", queue=8)), "stream": True}
    response, events, comments = raw_sse(special.url + "/v1/chat/completions", body)
    assert response.status_code == 200  # the first keep-alive started the stream
    assert ": ping" in comments
    assert events[-1]["error"]["code"] == "deadline_exceeded"
    with pytest.raises(openai.APIError) as info:
        for _ in client(special.url + "/v1").chat.completions.create(**body):
            pass
    assert "deadline" in str(info.value)


def test_client_timeout_caps_a_one_piece_answer_only(special: Server) -> None:
    # The openai SDK tells its read timeout in x-stainless-read-timeout. For a JSON answer that
    # is the whole wait, so the deadline is capped just below it ...
    url = special.url + "/v1/chat/completions"
    body: dict[str, Any] = {"model": "gemma-2b", "messages": user(say("late", queue=8))}
    response = httpx.post(
        url, json=body, headers={**AUTH, "x-stainless-read-timeout": "1"}, timeout=30
    )
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "deadline_exceeded"
    # ... but a stream's read timeout only bounds silences, which keep-alives fill.
    body = {"model": "gemma-2b", "messages": user(say("worth the wait", queue=1.2))}
    response, events, comments = raw_sse(
        url, {**body, "stream": True}, headers={"x-stainless-read-timeout": "0.6"}
    )
    chunks = [ChatCompletionChunk.model_validate(e) for e in events[:-1]]
    assert stream_texts(chunks) == {0: "worth the wait"}
    assert finish_reasons(chunks) == {0: ["stop"]}
    assert ": ping" in comments


# ----------------------------------------------------------------------------- CORS


def test_cors_preflight_for_a_configured_origin(special: Server) -> None:
    response = httpx.options(
        special.url + "/v1/chat/completions",
        headers={
            "origin": ORIGIN,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type, x-stainless-os",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in response.headers["access-control-allow-methods"]
    allowed = response.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed and "x-stainless-os" in allowed


def test_cors_headers_on_answers_and_errors(special: Server) -> None:
    url = special.url + "/v1/chat/completions"
    body = {"model": "gemma-2b", "messages": user(say("browser"))}
    response = httpx.post(url, json=body, headers={**AUTH, "origin": ORIGIN}, timeout=30)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN
    exposed = response.headers["access-control-expose-headers"].lower()
    for name in ("x-request-id", "x-job-id", "retry-after", "x-ratelimit-remaining-tokens"):
        assert name in exposed
    _, events, _ = raw_sse(url, {**body, "stream": True}, headers={"origin": ORIGIN})
    assert events[-1] == "[DONE]"
    with httpx.stream(
        "POST", url, json={**body, "stream": True}, headers={**AUTH, "origin": ORIGIN}
    ) as streamed:
        assert streamed.headers["access-control-allow-origin"] == ORIGIN
    denied = httpx.post(url, json=body, headers={"origin": ORIGIN})
    assert denied.status_code == 401
    assert denied.headers["access-control-allow-origin"] == ORIGIN  # the browser can read why


def test_cors_refuses_other_origins_and_is_off_by_default(special: Server, base_url: str) -> None:
    preflight = httpx.options(
        special.url + "/v1/chat/completions",
        headers={"origin": "http://evil.example", "access-control-request-method": "POST"},
    )
    assert preflight.status_code == 400
    assert "access-control-allow-origin" not in preflight.headers
    body = {"model": "gemma-2b", "messages": user(say("no"))}
    other = httpx.post(
        special.url + "/v1/chat/completions",
        json=body,
        headers={**AUTH, "origin": "http://evil.example"},
        timeout=30,
    )
    assert "access-control-allow-origin" not in other.headers
    plain = httpx.post(
        f"{base_url}/chat/completions", json=body, headers={**AUTH, "origin": ORIGIN}, timeout=30
    )
    assert plain.status_code == 200
    assert "access-control-allow-origin" not in plain.headers
