"""End to end: Open WebUI's requests, replayed, and prompts that fit the model (issue 24, 4-5).

Open WebUI 0.12.4 is too large to install within the suite's budget, so the session it ran once
against the gateway (``tests/clients/recorded/README.md`` says how) is replayed from
``tests/clients/recorded/open_webui_*.json``: its OpenAI connection lists the models, streams a
turn with its 36 built-in tools (~25 KB), sends the second turn, has a third stopped mid-stream
(the connection closed), and asks for a title and follow-ups. The prompt the upstream receives
for "Name three colours." fits gemma-2b's 8192 tokens, and a prompt that cannot fit is refused
at once on the chat, Responses and Messages doors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.engine.tokens import count_tokens
from tests.e2e.conftest import job_prompt
from tests.e2e.observe import settle
from tests.e2e.servers import ALICE_KEY, Server

RECORDED = Path(__file__).resolve().parents[1] / "clients" / "recorded"
HEADERS = {"authorization": f"Bearer {ALICE_KEY}"}
WINDOW = 8192  # gemma:2b's


def recorded(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((RECORDED / f"open_webui_{name}.json").read_text())
    return body


def events(response: httpx.Response) -> list[dict[str, Any]]:
    datas = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert datas and datas[-1] == "[DONE]"
    return [json.loads(d) for d in datas[:-1]]


def streamed_text(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def post(base_url: str, path: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(base_url + path, json=body, headers={**HEADERS, **headers}, timeout=60)


def test_models_are_listed_for_the_connection(base_url: str) -> None:
    listed = httpx.get(base_url + "/models", headers=HEADERS, timeout=10)
    assert listed.status_code == 200
    assert "gemma-2b" in [m["id"] for m in listed.json()["data"]]


@pytest.mark.parametrize("turn", ["chat", "second_turn"])
def test_a_streamed_turn_with_36_tools_fits_gemma_2b(
    base_url: str, emulator: Server, turn: str
) -> None:
    body = recorded(turn)
    assert len(body["tools"]) == 36
    answer = post(base_url, "/chat/completions", body)
    assert answer.status_code == 200, answer.text
    chunks = events(answer)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert streamed_text(chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    prompt = job_prompt(emulator, answer.headers["x-job-id"])
    assert count_tokens(prompt) <= WINDOW - 1024  # the answer keeps its room
    assert body["messages"][-1]["content"] in prompt
    if turn == "second_turn":
        assert "Red, green and blue." in prompt  # the first turn is still there


def test_stop_mid_stream_frees_the_gateway(base_url: str, gateway: Server) -> None:
    body = recorded("stop")  # asks for a long story, paced: [[emulate:words 400]] ...
    assert "[[emulate:wps 20]]" in body["messages"][-1]["content"]
    with (
        httpx.Client(timeout=30) as client,
        client.stream("POST", base_url + "/chat/completions", json=body, headers=HEADERS) as r,
    ):
        assert r.status_code == 200
        lines = r.iter_lines()
        seen = 0
        for line in lines:
            if line.startswith("data: ") and '"content":"' in line:
                seen += 1
            if seen >= 3:
                break  # Open WebUI's stop button: the connection is closed
    state = settle(gateway)
    assert state.streams == 0 and state.requests == 0
    again = post(base_url, "/chat/completions", recorded("chat"))
    assert again.status_code == 200


@pytest.mark.parametrize("task", ["title", "follow_ups"])
def test_title_and_follow_up_generation(base_url: str, emulator: Server, task: str) -> None:
    body = recorded(task)
    key = "title" if task == "title" else "follow_ups"
    reply = '{"title": "Colour Names"}' if task == "title" else '{"follow_ups": ["More?"]}'
    body["messages"][0]["content"] += f" [[emulate:reply {reply}]]"
    answer = post(base_url, "/chat/completions", body)
    assert answer.status_code == 200, answer.text
    content = answer.json()["choices"][0]["message"]["content"]
    assert key in json.loads(content)  # what Open WebUI parses out of it
    assert "<chat_history>" in job_prompt(emulator, answer.headers["x-job-id"])


TOO_LONG = " ".join(f"word{i}" for i in range(9000))


def test_too_long_is_context_length_exceeded_on_chat(base_url: str) -> None:
    body = {"model": "gemma-2b", "messages": [{"role": "user", "content": TOO_LONG}]}
    answer = post(base_url, "/chat/completions", body)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "context_length_exceeded" and error["param"] == "messages"
    assert "maximum context length is 8192 tokens" in error["message"]


def test_too_long_is_context_length_exceeded_on_responses(base_url: str) -> None:
    answer = post(base_url, "/responses", {"model": "gemma-2b", "input": TOO_LONG})
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "context_length_exceeded" and error["param"] == "input"


def test_too_long_is_prompt_is_too_long_on_messages(base_url: str) -> None:
    body = {
        "model": "gemma-2b",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": TOO_LONG}],
    }
    answer = post(base_url, "/messages", body, **{"anthropic-version": "2023-06-01"})
    assert answer.status_code == 400
    assert answer.json()["type"] == "error"
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("prompt is too long: ")


def test_responses_truncation_auto_drops_the_oldest_turns(base_url: str, emulator: Server) -> None:
    history: list[dict[str, Any]] = []
    for i in range(8):
        history.append({"role": "user", "content": f"question {i} " + TOO_LONG[:6000]})
        history.append({"role": "assistant", "content": "ok"})
    history.append({"role": "user", "content": "Name three colours."})
    refused = post(base_url, "/responses", {"model": "gemma-2b", "input": history})
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "context_length_exceeded"
    bogus = post(base_url, "/responses", {"model": "gemma-2b", "input": "hi", "truncation": "x"})
    assert bogus.status_code == 400 and bogus.json()["error"]["param"] == "truncation"
    body = {"model": "gemma-2b", "input": history, "truncation": "auto", "store": False}
    answer = post(base_url, "/responses", body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["truncation"] == "auto"
    prompt = job_prompt(emulator, answer.headers["x-job-id"])
    assert count_tokens(prompt) <= WINDOW - 1024
    assert "Name three colours." in prompt and "question 0 " not in prompt
