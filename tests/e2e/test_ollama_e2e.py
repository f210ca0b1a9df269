"""End to end: Ollama's own clients (the ``ollama`` Python and npm libraries, LangChain's
``ChatOllama``, LlamaIndex's ``Ollama``) against the gateway's Ollama door and the emulator.

Every chunk and answer is compared field by field with Ollama's API reference (the field sets
below), not only read through a client (which ignores what it does not know).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest
from pydantic import BaseModel

from gateway.engine.tokens import count_tokens
from tests.e2e.conftest import job_prompt
from tests.e2e.servers import (
    ALICE_KEY,
    ALICE_TOKEN,
    Server,
    free_port,
    gateway_config,
    running,
    start_emulator,
    start_gateway,
)

GEMMA_ONLY_KEY = "sk-test-gemma-only-0123"
AUTH = {"authorization": f"Bearer {ALICE_KEY}"}
QUICK = "[[emulate:queue 0.05]] "

#: Ollama's API reference (docs.ollama.com/api): the fields of each object, exactly.
CHUNK = {"model", "created_at", "done"}
FINAL = CHUNK | {
    "done_reason",
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
}
CHAT_CHUNK, CHAT_FINAL = CHUNK | {"message"}, FINAL | {"message"}
GEN_CHUNK, GEN_FINAL = CHUNK | {"response"}, FINAL | {"response", "context"}
TAG = {"name", "model", "modified_at", "size", "digest", "details"}
DETAILS = {"parent_model", "format", "family", "families", "parameter_size", "quantization_level"}
SHOW = {"modelfile", "parameters", "template", "details", "model_info", "capabilities"}
NANOS = ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration")

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city now.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
PARIS = 'Weather in Paris? [[emulate:tool get_weather {"city": "Paris"}]]'


class Person(BaseModel):
    name: str
    age: int


ADA = QUICK + 'Who wrote the first program? [[emulate:json {"name": "Ada", "age": 36}]]'


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running(start_emulator(tmp_path_factory.mktemp("ollama-emulator"))) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(emulator: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    details = {"family": "gemma", "parameter_size": "2B", "quantization_level": "Q4_0"}
    config = gateway_config(
        emulator.url,
        models=[
            {"name": "gemma-2b", "tag": "gemma:2b", "details": details, "context_window": 8192},
            {"name": "llama2-uncensored", "tag": "llama2-uncensored", "template": "llama2"},
        ],
        keys=[
            {"name": "alice", "key": ALICE_KEY, "upstream_token": ALICE_TOKEN},
            {
                "name": "gemma-only",
                "key": GEMMA_ONLY_KEY,
                "upstream_token": ALICE_TOKEN,
                "models": ["gemma-2b"],
            },
        ],
        cache={"models": ["llama2-uncensored"]},
    )
    tmp = tmp_path_factory.mktemp("ollama-gateway")
    with running(start_gateway(tmp, config)) as server:
        yield server


@pytest.fixture
def client(gateway: Server) -> ollama.Client:
    return ollama.Client(host=gateway.url, headers=AUTH)


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def lines(gateway: Server, path: str, body: dict[str, Any]) -> tuple[httpx.Response, list[Any]]:
    with httpx.stream("POST", gateway.url + path, json=body, headers=AUTH, timeout=60) as r:
        parsed = [json.loads(line) for line in r.iter_lines()]
    return r, parsed


def check_final(final: dict[str, Any], fields: set[str], started: float) -> None:
    assert set(final) == fields, set(final) ^ fields
    assert final["done"] is True and final["done_reason"] in ("stop", "length")
    elapsed_ns = (time.perf_counter() - started) * 1e9
    for name in NANOS:
        assert isinstance(final[name], int) and final[name] >= 0, name
    assert 0 < final["total_duration"] <= elapsed_ns
    parts = final["load_duration"] + final["prompt_eval_duration"] + final["eval_duration"]
    assert parts <= final["total_duration"]
    assert final["prompt_eval_duration"] > 0  # the emulator's queue: measured, not made up
    assert final["eval_count"] > 0
    assert final["created_at"].endswith("Z")


# ------------------------------------------------------------------------------ models


def test_list_shows_each_model_under_its_tag_with_details(
    client: ollama.Client, gateway: Server
) -> None:
    listed = client.list()
    assert [m.model for m in listed.models] == ["gemma:2b", "llama2-uncensored:latest"]
    gemma = listed.models[0].details
    assert gemma is not None
    assert (gemma.family, gemma.parameter_size, gemma.quantization_level) == ("gemma", "2B", "Q4_0")
    raw = httpx.get(gateway.url + "/api/tags", headers=AUTH).json()
    for model in raw["models"]:
        assert set(model) == TAG and set(model["details"]) == DETAILS
    only = ollama.Client(host=gateway.url, headers={"authorization": f"Bearer {GEMMA_ONLY_KEY}"})
    assert [m.model for m in only.list().models] == ["gemma:2b"]
    with pytest.raises(ollama.ResponseError) as refused:
        ollama.Client(host=gateway.url).list()
    assert refused.value.status_code == 401 and "API key" in refused.value.error


def test_show_by_tag_or_gateway_name_and_unknown_is_404(
    client: ollama.Client, gateway: Server
) -> None:
    by_tag, by_name = client.show("gemma:2b"), client.show("gemma-2b")
    assert by_tag.details == by_name.details and by_tag.details is not None
    assert by_tag.details.family == "gemma"
    assert by_tag.modelinfo == {"general.architecture": "gemma", "gemma.context_length": 8192}
    assert by_tag.capabilities == ["completion", "tools"]
    assert client.show("llama2-uncensored").details is not None  # ":latest" is optional
    raw = httpx.post(gateway.url + "/api/show", json={"model": "gemma:2b"}, headers=AUTH).json()
    assert set(raw) >= SHOW
    only = ollama.Client(host=gateway.url, headers={"authorization": f"Bearer {GEMMA_ONLY_KEY}"})
    for who, name in ((client, "mistral:7b"), (only, "llama2-uncensored")):
        with pytest.raises(ollama.ResponseError) as missing:
            who.show(name)
        assert missing.value.status_code == 404


def test_version_ps_and_the_root_probe(client: ollama.Client, gateway: Server) -> None:
    assert httpx.get(gateway.url + "/api/version").json()["version"].count(".") == 2
    assert client.ps().models == []
    for method in ("GET", "HEAD"):
        probe = httpx.request(method, gateway.url + "/")
        assert probe.status_code == 200
    assert httpx.get(gateway.url + "/").text == "Ollama is running"
    page = httpx.get(gateway.url + "/", headers={"accept": "text/html"})
    assert page.headers["content-type"].startswith("text/html")  # the console, for a browser


# ------------------------------------------------------------------------------ chat


def test_chat_whole_answer_field_by_field(gateway: Server, emulator: Server) -> None:
    started = time.perf_counter()
    body = {"model": "gemma:2b", "messages": user(QUICK + "[[emulate:reply Hello there.]]")}
    answer = httpx.post(
        gateway.url + "/api/chat", json={**body, "stream": False}, headers=AUTH, timeout=60
    )
    assert answer.headers["content-type"].startswith("application/json")
    data = answer.json()
    check_final(data, CHAT_FINAL, started)
    assert data["model"] == "gemma:2b"  # as the client named it
    assert data["message"] == {"role": "assistant", "content": "Hello there."}
    prompt = job_prompt(emulator, answer.headers["x-job-id"])
    assert data["prompt_eval_count"] == count_tokens(prompt)


def test_chat_stream_is_ndjson_field_by_field(gateway: Server, client: ollama.Client) -> None:
    started = time.perf_counter()
    text = QUICK + "[[emulate:reply One two three four five six.]]"
    response, chunks = lines(gateway, "/api/chat", {"model": "gemma-2b", "messages": user(text)})
    assert response.headers["content-type"] == "application/x-ndjson"
    *parts, final = chunks
    assert parts and all(set(c) == CHAT_CHUNK for c in parts)
    assert all(c["done"] is False and set(c["message"]) == {"role", "content"} for c in parts)
    assert "".join(c["message"]["content"] for c in parts) == "One two three four five six."
    check_final(final, CHAT_FINAL, started)
    assert final["message"] == {"role": "assistant", "content": ""}
    streamed = client.chat(model="gemma:2b", messages=user(text), stream=True)
    assert "".join(p.message.content or "" for p in streamed) == "One two three four five six."


def test_options_num_predict_cuts_with_done_reason_length(client: ollama.Client) -> None:
    text = QUICK + "[[emulate:words 60]]"
    answer = client.chat(model="gemma:2b", messages=user(text), options={"num_predict": 5})
    assert answer.done_reason == "length" and answer.eval_count == 5
    stopped = client.chat(
        model="gemma:2b",
        messages=user(QUICK + "[[emulate:reply alpha beta STOP gamma]]"),
        options={"stop": ["STOP"], "temperature": 0.2},
    )
    assert stopped.message.content == "alpha beta " and stopped.done_reason == "stop"


def test_chat_tools_then_the_tool_answer(client: ollama.Client, gateway: Server) -> None:
    first = client.chat(model="gemma:2b", messages=user(QUICK + PARIS), tools=[WEATHER])
    calls = first.message.tool_calls
    assert calls is not None and len(calls) == 1
    assert calls[0].function.name == "get_weather"
    assert calls[0].function.arguments == {"city": "Paris"}
    _, chunks = lines(
        gateway, "/api/chat", {"model": "gemma:2b", "messages": user(PARIS), "tools": [WEATHER]}
    )
    streamed = [c for c in chunks if c["message"].get("tool_calls")]
    assert len(streamed) == 1 and set(streamed[0]) == CHAT_CHUNK
    call = streamed[0]["message"]["tool_calls"][0]["function"]
    assert (call["name"], call["arguments"]) == ("get_weather", {"city": "Paris"})
    history = [
        *user(QUICK + PARIS),
        {"role": "assistant", "content": "", "tool_calls": [{"function": call}]},
        {"role": "tool", "content": "18 C and sunny", "tool_name": "get_weather"},
    ]
    second = client.chat(model="gemma:2b", messages=history, tools=[WEATHER])
    assert "18 C and sunny" in (second.message.content or "")
    assert not second.message.tool_calls


def test_chat_format_schema_and_json(client: ollama.Client) -> None:
    answer = client.chat(
        model="gemma:2b", messages=user(ADA), format=Person.model_json_schema(), stream=False
    )
    assert Person.model_validate_json(answer.message.content or "") == Person(name="Ada", age=36)
    streamed = client.chat(model="gemma:2b", messages=user(ADA), format="json", stream=True)
    assert json.loads("".join(p.message.content or "" for p in streamed))["name"] == "Ada"


# ------------------------------------------------------------------------------ generate


def test_generate_and_its_context_continue_the_conversation(
    client: ollama.Client, gateway: Server, emulator: Server
) -> None:
    started = time.perf_counter()
    first = client.generate(
        model="llama2-uncensored", prompt=QUICK + "[[emulate:reply The sky is blue.]]"
    )
    assert first.response == "The sky is blue." and first.context
    assert first.done_reason == "stop"
    second = httpx.post(
        gateway.url + "/api/generate",
        json={
            "model": "llama2-uncensored",
            "prompt": QUICK + "And at night?",
            "system": "Be brief.",
            "context": list(first.context),
            "stream": False,
        },
        headers=AUTH,
        timeout=60,
    )
    check_final(second.json(), GEN_FINAL, started)
    prompt = job_prompt(emulator, second.headers["x-job-id"])
    assert prompt.index("The sky is blue.") < prompt.index("And at night?")
    assert "Be brief." in prompt
    _, chunks = lines(
        gateway,
        "/api/generate",
        {"model": "llama2-uncensored", "prompt": QUICK + "[[emulate:reply a b c]]"},
    )
    *parts, final = chunks
    assert all(set(c) == GEN_CHUNK for c in parts)
    assert "".join(c["response"] for c in parts) == "a b c"
    assert set(final) == GEN_FINAL and final["response"] == ""


def test_generate_raw_sends_the_prompt_as_is(gateway: Server, emulator: Server) -> None:
    prompt = QUICK + "<s>[INST] exactly this [/INST]"
    answer = httpx.post(
        gateway.url + "/api/generate",
        json={"model": "gemma:2b", "prompt": prompt, "raw": True, "stream": False},
        headers=AUTH,
        timeout=60,
    )
    assert answer.status_code == 200 and "context" not in answer.json()
    assert job_prompt(emulator, answer.headers["x-job-id"]) == prompt


# ------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [
        ("/api/embed", {"model": "gemma:2b", "input": "x"}, 501, "embeddings"),
        ("/api/embeddings", {"model": "gemma:2b", "prompt": "x"}, 501, "embeddings"),
        ("/api/pull", {"model": "gemma:2b"}, 501, "grid"),
        ("/api/push", {"model": "gemma:2b"}, 501, "grid"),
        ("/api/create", {"model": "x"}, 501, "grid"),
        ("/api/copy", {"source": "a", "destination": "b"}, 501, "grid"),
        ("/api/blobs/sha256:00", {}, 501, "blobs"),
        ("/api/nothing", {}, 404, "Unknown endpoint"),
        ("/api/chat", {"model": "gemma:2b", "messages": "hi"}, 400, "messages"),
        ("/api/chat", {"model": "nope", "messages": user("hi")}, 404, "nope"),
        (
            "/api/chat",
            {"model": "gemma:2b", "messages": [{"role": "user", "content": "x", "images": ["a"]}]},
            400,
            "images",
        ),
        ("/api/generate", {"model": "gemma:2b", "prompt": "x", "suffix": "y"}, 400, "suffix"),
        ("/api/generate", {"model": "gemma:2b", "prompt": "x", "template": "t"}, 400, "template"),
        ("/api/generate", {"model": "gemma:2b", "prompt": "x", "context": [1, 2]}, 400, "context"),
        ("/api/chat", {"model": "gemma:2b", "messages": user("x"), "stream": "yes"}, 400, "stream"),
    ],
)
def test_errors_are_ollamas_shape_with_a_reason(
    gateway: Server, path: str, body: dict[str, Any], status: int, words: str
) -> None:
    response = httpx.post(gateway.url + path, json=body, headers=AUTH)
    assert response.status_code == status
    assert set(response.json()) == {"error"} and words in response.json()["error"]


def test_wrong_method_and_delete_answer_in_ollamas_shape(gateway: Server) -> None:
    wrong = httpx.get(gateway.url + "/api/chat", headers=AUTH)
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    assert set(wrong.json()) == {"error"}
    delete = httpx.request("DELETE", gateway.url + "/api/delete", json={"model": "x"})
    assert delete.status_code == 501 and "grid" in delete.json()["error"]
    with pytest.raises(ollama.ResponseError) as raised:
        ollama.Client(host=gateway.url, headers=AUTH).pull("gemma:2b")
    assert raised.value.status_code == 501


def test_curl_style_form_content_type_is_read_as_json(gateway: Server) -> None:
    body = json.dumps({"model": "gemma:2b", "messages": user(QUICK + "hi"), "stream": False})
    headers = {**AUTH, "content-type": "application/x-www-form-urlencoded"}
    answer = httpx.post(gateway.url + "/api/chat", content=body, headers=headers, timeout=60)
    assert answer.status_code == 200 and answer.json()["done"] is True


def test_error_mid_stream_is_a_last_error_line(gateway: Server, client: ollama.Client) -> None:
    text = QUICK + "[[emulate:fail boom]]"
    _, chunks = lines(gateway, "/api/chat", {"model": "gemma:2b", "messages": user(text)})
    assert set(chunks[-1]) == {"error"} and all("error" not in c for c in chunks[:-1])
    with pytest.raises(ollama.ResponseError):
        for _ in client.chat(model="gemma:2b", messages=user(text), stream=True):
            pass


def test_a_queued_job_keeps_the_line_with_empty_chunks(
    gateway: Server, client: ollama.Client
) -> None:
    """keepalive_interval is 1 s in the test config; the job waits 2.5 s in the queue."""
    text = "[[emulate:queue 2.5]] [[emulate:reply Done waiting.]]"
    _, chunks = lines(gateway, "/api/chat", {"model": "gemma:2b", "messages": user(text)})
    assert chunks[0]["message"]["content"] == "" and chunks[0]["done"] is False
    assert set(chunks[0]) == CHAT_CHUNK
    streamed = client.chat(model="gemma:2b", messages=user(text), stream=True)
    assert "".join(p.message.content or "" for p in streamed) == "Done waiting."


def test_the_response_cache_answers_this_door_too(gateway: Server) -> None:
    body = {
        "model": "llama2-uncensored",
        "messages": user(QUICK + "[[emulate:reply Cached once.]]"),
        "stream": False,
    }
    first = httpx.post(gateway.url + "/api/chat", json=body, headers=AUTH, timeout=60)
    again = httpx.post(gateway.url + "/api/chat", json=body, headers=AUTH, timeout=60)
    assert first.headers["x-gateway-cache"] == "miss" and again.headers["x-gateway-cache"] == "hit"
    assert again.json()["message"] == first.json()["message"]
    assert set(again.json()) == CHAT_FINAL
    response, chunks = lines(gateway, "/api/chat", {**body, "stream": True})
    assert response.headers["x-gateway-cache"] == "hit"
    assert "".join(c["message"]["content"] for c in chunks) == "Cached once."
    assert chunks[-1]["done"] is True and set(chunks[-1]) == CHAT_FINAL


def test_metrics_count_the_door_by_route(gateway: Server, client: ollama.Client) -> None:
    client.chat(model="gemma:2b", messages=user(QUICK + "hi"))
    metrics = httpx.get(gateway.url + "/metrics").text
    assert 'route="/api/chat"' in metrics


# ------------------------------------------------------------------------------ frameworks


def test_langchain_chat_ollama_tools_and_structured_output(gateway: Server) -> None:
    from langchain_ollama import ChatOllama

    llm = ChatOllama(model="gemma:2b", base_url=gateway.url, client_kwargs={"headers": AUTH})
    assert llm.invoke(QUICK + "[[emulate:reply Bonjour.]]").content == "Bonjour."
    chunks = list(llm.stream(QUICK + "[[emulate:reply un deux trois]]"))
    assert "".join(str(c.content) for c in chunks) == "un deux trois"
    called = llm.bind_tools([WEATHER]).invoke(QUICK + PARIS)
    assert called.tool_calls[0]["name"] == "get_weather"  # type: ignore[attr-defined]
    assert called.tool_calls[0]["args"] == {"city": "Paris"}  # type: ignore[attr-defined]
    person = llm.with_structured_output(Person).invoke(ADA)
    assert person == Person(name="Ada", age=36)


def test_llamaindex_ollama_chat_and_stream(
    gateway: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llama_index.core.llms import ChatMessage
    from llama_index.llms.ollama import Ollama

    monkeypatch.setenv("OLLAMA_API_KEY", ALICE_KEY)  # the ollama library sends it as Bearer
    llm = Ollama(model="gemma:2b", base_url=gateway.url, request_timeout=60)
    assert llm.metadata.context_window == 8192  # read from /api/show
    answer = llm.chat([ChatMessage(role="user", content=QUICK + "[[emulate:reply Salut.]]")])
    assert answer.message.content == "Salut."
    streamed = list(llm.stream_complete(QUICK + "[[emulate:reply x y z]]"))
    assert streamed[-1].text == "x y z"


NPM_DIR = (
    Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gateway-tests/npm-ollama"
)
NODE_CHAT = """
import { Ollama } from 'ollama';
const headers = { Authorization: 'Bearer ' + process.env.KEY };
const client = new Ollama({ host: process.env.HOST, headers });
const stream = await client.chat({ model: 'gemma:2b', stream: true,
  messages: [{ role: 'user', content: process.env.TEXT }] });
const parts = [];
for await (const part of stream) parts.push(part);
console.log(JSON.stringify(parts));
"""


def _npm_ollama() -> Path:
    """The ``ollama`` npm package in a cache outside the repo (installed once; offline after)."""
    if shutil.which("npm") is None or shutil.which("node") is None:
        pytest.skip("npm/node are not installed: the ollama npm client cannot be tried")
    if not (NPM_DIR / "node_modules/ollama/package.json").exists():
        NPM_DIR.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["npm", "install", "--prefer-offline", "--no-audit", "--no-fund", "ollama@0"],
            cwd=NPM_DIR,
            capture_output=True,
            timeout=300,
        )
        if done.returncode != 0:
            pytest.skip(f"npm could not install ollama: {done.stderr.decode()[-300:]}")
    return NPM_DIR


def test_ollama_npm_chat_stream(gateway: Server) -> None:
    where = _npm_ollama()
    script = where / "chat.mjs"
    script.write_text(NODE_CHAT)
    env = {
        **os.environ,
        "HOST": gateway.url,
        "KEY": ALICE_KEY,
        "TEXT": "[[emulate:queue 1.5]] [[emulate:reply Hola desde npm.]]",
    }
    done = subprocess.run(
        ["node", str(script)], cwd=where, env=env, capture_output=True, timeout=120
    )
    assert done.returncode == 0, done.stderr.decode()
    assert b"invalid json" not in done.stderr  # the keep-alive chunks parse
    parts = json.loads(done.stdout)
    assert "".join(p["message"]["content"] for p in parts) == "Hola desde npm."
    assert parts[-1]["done"] is True and set(parts[-1]) == CHAT_FINAL


# ------------------------------------------------------------------------------ own address


def test_an_ollama_address_of_its_own_with_a_default_key(emulator: Server, tmp_path: Path) -> None:
    """ollama.port: tools that cannot send a key reach Ollama's API there, as ``alice``."""
    ollama_port = free_port()
    config = gateway_config(emulator.url, ollama={"port": ollama_port, "default_key": ALICE_KEY})
    with running(start_gateway(tmp_path, config)) as server:
        url = f"http://127.0.0.1:{ollama_port}"
        keyless = ollama.Client(host=url)
        assert [m.model for m in keyless.list().models] == ["gemma:2b", "llama2-uncensored:latest"]
        answer = keyless.chat(model="gemma:2b", messages=user(QUICK + "[[emulate:reply Yo.]]"))
        assert answer.message.content == "Yo."
        assert httpx.get(url + "/").text == "Ollama is running"
        browser = httpx.get(url + "/", headers={"accept": "text/html"})  # no console here
        assert browser.text == "Ollama is running"
        other = httpx.post(url + "/v1/chat/completions", json={})
        assert other.status_code == 404 and "only Ollama's API" in other.json()["error"]
        wrong = ollama.Client(host=url, headers={"authorization": "Bearer sk-not-a-key-at-all"})
        with pytest.raises(ollama.ResponseError) as refused:
            wrong.list()  # a key sent is checked, never replaced by the default
        assert refused.value.status_code == 401
        main = ollama.Client(host=server.url)  # the API port keeps asking for a key
        with pytest.raises(ollama.ResponseError) as missing:
            main.list()
        assert missing.value.status_code == 401
        # the access line names the default key
        assert "alice" in [r.get("key") for r in server.records()]
