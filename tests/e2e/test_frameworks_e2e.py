"""End to end: LangChain and LlamaIndex, configured only by arguments, against the gateway.

Every test checks the text (an ``[[emulate:reply ...]]`` directive fixes it) and the finish
reason where the framework exposes it. Nothing may leave the machine: tiktoken (whose
encodings would be downloaded) is made to fail, and sockets may only connect to loopback.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
import tiktoken
from langchain_core.messages import AIMessageChunk, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI, OpenAI
from llama_index.core.llms import ChatMessage
from llama_index.llms.openai_like import OpenAILike

from gateway.engine.tokens import count_tokens, truncate_to_tokens
from tests.e2e.conftest import emulator_stats
from tests.e2e.servers import ALICE_KEY, Server

LONG = "one two three four five six seven eight nine ten eleven twelve"


def say(text: str, *, wps: float | None = None) -> str:
    prompt = f"Answer. [[emulate:reply {text}]] [[emulate:queue 0]]"
    return prompt + (f" [[emulate:wps {wps:g}]]" if wps else "")


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No tokenizer downloads, no connection anywhere but loopback."""

    def no_tiktoken(*args: object, **kwargs: object) -> None:
        raise AssertionError("tiktoken was asked for an encoding (it would download it)")

    monkeypatch.setattr(tiktoken, "get_encoding", no_tiktoken)
    monkeypatch.setattr(tiktoken, "encoding_for_model", no_tiktoken)
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            assert address[0] in ("127.0.0.1", "::1", "localhost"), f"connect to {address}"
        real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    yield


def jobs_created(emulator: Server) -> tuple[int, int]:
    stats = emulator_stats(emulator)
    return int(stats["submit_requests"]), int(stats["jobs_created"])  # type: ignore[call-overload]


# ----------------------------------------------------------------------------- LangChain


def chat_model(base_url: str, **kwargs: Any) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=base_url, api_key=ALICE_KEY, model="gemma-2b", max_retries=0, **kwargs
    )


def test_langchain_chat_invoke(base_url: str) -> None:
    message = chat_model(base_url).invoke(
        [SystemMessage("Be brief."), HumanMessage(say("Paris is the capital."))]
    )
    assert message.content == "Paris is the capital."
    assert message.response_metadata["finish_reason"] == "stop"
    assert message.response_metadata["model_name"] == "gemma-2b"
    assert message.usage_metadata is not None
    assert message.usage_metadata["output_tokens"] == count_tokens("Paris is the capital.")


def test_langchain_chat_invoke_with_max_tokens_and_stop(base_url: str) -> None:
    cut = chat_model(base_url, max_tokens=4).invoke(say(LONG))
    assert cut.content == truncate_to_tokens(LONG, 4)
    assert cut.response_metadata["finish_reason"] == "length"
    stopped = chat_model(base_url).invoke(say("first part STOP second part"), stop=["STOP"])
    assert stopped.content == "first part "
    assert stopped.response_metadata["finish_reason"] == "stop"


def test_langchain_chat_stream(base_url: str) -> None:
    chunks = list(chat_model(base_url).stream(say(LONG, wps=30)))
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert len([c for c in chunks if c.content]) >= 2
    full = chunks[0]
    for chunk in chunks[1:]:
        full += chunk
    assert full.content == LONG
    assert full.response_metadata["finish_reason"] == "stop"


def test_langchain_chat_stream_with_usage_and_stop(base_url: str) -> None:
    model = chat_model(base_url, stream_usage=True)
    chunks = list(model.stream(say("keep ### drop", wps=30), stop=["###"]))
    full = chunks[0]
    for chunk in chunks[1:]:
        full += chunk
    assert full.content == "keep "
    assert full.response_metadata["finish_reason"] == "stop"
    assert full.usage_metadata is not None
    assert full.usage_metadata["output_tokens"] == count_tokens("keep ")


def test_langchain_chat_batch(base_url: str) -> None:
    replies = ["first answer", "second answer", "third answer"]
    messages = chat_model(base_url).batch([say(r) for r in replies])
    assert [m.content for m in messages] == replies
    assert [m.response_metadata["finish_reason"] for m in messages] == ["stop"] * 3


async def test_langchain_chat_async(base_url: str) -> None:
    model = chat_model(base_url)
    message = await model.ainvoke(say("async hello"))
    assert message.content == "async hello"
    assert message.response_metadata["finish_reason"] == "stop"
    parts = [chunk.content async for chunk in model.astream(say("async stream", wps=30))]
    assert "".join(str(p) for p in parts) == "async stream"


def text_model(base_url: str, **kwargs: Any) -> OpenAI:
    return OpenAI(base_url=base_url, api_key=ALICE_KEY, model="gemma-2b", max_retries=0, **kwargs)


def test_langchain_llm_invoke_and_stream(base_url: str) -> None:
    llm = text_model(base_url)  # sends max_tokens=256, temperature, penalties, n, seed, logprobs
    assert llm.invoke(say("completed text")) == "completed text"
    assert "".join(llm.stream(say(LONG, wps=30))) == LONG
    assert "".join(llm.stream(say("up to STOP here", wps=30), stop=["STOP"])) == "up to "


def test_langchain_llm_generate_is_one_submission(base_url: str, emulator: Server) -> None:
    replies = ["alpha", "beta", LONG]
    before = jobs_created(emulator)
    result = text_model(base_url, max_tokens=5).generate([say(r) for r in replies])
    after = jobs_created(emulator)
    assert (after[0] - before[0], after[1] - before[1]) == (1, 3)  # one prompt list
    texts = [g[0].text for g in result.generations]
    reasons = [(g[0].generation_info or {}).get("finish_reason") for g in result.generations]
    assert texts == ["alpha", "beta", truncate_to_tokens(LONG, 5)]
    assert reasons == ["stop", "stop", "length"]
    assert result.llm_output is not None
    usage = result.llm_output["token_usage"]
    assert usage["completion_tokens"] == count_tokens("alpha") + count_tokens("beta") + 5


# ----------------------------------------------------------------------------- LlamaIndex


def llama(base_url: str, *, chat: bool, **kwargs: Any) -> OpenAILike:
    return OpenAILike(
        api_base=base_url,
        api_key=ALICE_KEY,
        model="gemma-2b",
        is_chat_model=chat,
        max_retries=0,
        timeout=30,
        **kwargs,
    )


def test_llamaindex_chat_model(base_url: str) -> None:
    llm = llama(base_url, chat=True)
    response = llm.chat([ChatMessage(role="user", content=say("chatted"))])
    assert response.message.content == "chatted"
    assert response.raw is not None and response.raw.choices[0].finish_reason == "stop"
    chunks = list(llm.stream_chat([ChatMessage(role="user", content=say(LONG, wps=30))]))
    assert "".join(c.delta or "" for c in chunks) == LONG
    assert chunks[-1].message.content == LONG
    assert chunks[-1].raw.choices[0].finish_reason == "stop"
    completed = llm.complete(say("completed by chat"))  # a chat model completes via chat
    assert completed.text == "completed by chat"
    assert completed.raw.choices[0].finish_reason == "stop"


def test_llamaindex_chat_model_max_tokens(base_url: str) -> None:
    response = llama(base_url, chat=True, max_tokens=3).chat(
        [ChatMessage(role="user", content=say(LONG))]
    )
    assert response.message.content == truncate_to_tokens(LONG, 3)
    assert response.raw.choices[0].finish_reason == "length"


def test_llamaindex_completion_model(base_url: str, emulator: Server) -> None:
    llm = llama(base_url, chat=False)
    before = jobs_created(emulator)
    response = llm.complete(say("plain completion"))
    assert jobs_created(emulator)[1] - before[1] == 1
    assert response.text == "plain completion"
    assert response.raw.choices[0].finish_reason == "stop"
    # No max_tokens (no tokenizer to size one): /v1/completions' default of 16, as OpenAI's.
    chunks = list(llm.stream_complete(say(LONG, wps=30)))
    assert chunks[-1].text == truncate_to_tokens(LONG, 16)
    assert chunks[-1].raw.choices[0].finish_reason == "length"
    sized = list(llama(base_url, chat=False, max_tokens=64).stream_complete(say(LONG, wps=30)))
    assert sized[-1].text == LONG
    assert sized[-1].raw.choices[0].finish_reason == "stop"
    chatted = llm.chat([ChatMessage(role="user", content=say("chat over completions"))])
    assert chatted.message.content == "chat over completions"


async def test_llamaindex_async(base_url: str) -> None:
    llm = llama(base_url, chat=True)
    response = await llm.achat([ChatMessage(role="user", content=say("async chat"))])
    assert response.message.content == "async chat"
    stream = await llm.astream_chat([ChatMessage(role="user", content=say("async more"))])
    chunks = [chunk async for chunk in stream]
    last = chunks[-1]
    assert last.message.content == "async more"
    assert last.raw.choices[0].finish_reason == "stop"
    completion = await llama(base_url, chat=False).acomplete(say("async complete"))
    assert completion.text == "async complete"
