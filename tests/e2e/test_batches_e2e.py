"""End to end: OpenAI's Batch API (``/v1/files`` + ``/v1/batches``) through the official SDK.

A batch's lines are answered through the front desk as live requests would be: the output
lines' bodies are what the live endpoint answers, a bad line fails alone with the live
endpoint's error, and the lines ride multi-input submissions.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.servers import (
    ALICE_KEY,
    BOB_KEY,
    Server,
    gateway_config,
    running,
    start_emulator,
    start_gateway,
)
from tests.openai_spec import check

CHAT = "/v1/chat/completions"


def line(custom_id: str, body: dict[str, Any], url: str = CHAT) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def chat(text: str, model: str = "gemma-2b") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(x) + "\n" for x in lines).encode()


def wait_done(api: openai.OpenAI, batch_id: str, limit: float = 60) -> Any:
    deadline = time.monotonic() + limit
    while True:
        got = api.batches.retrieve(batch_id)
        if got.status in ("completed", "failed", "expired", "cancelled"):
            return got
        assert time.monotonic() < deadline, got
        time.sleep(0.2)


def results(api: openai.OpenAI, file_id: str | None) -> dict[str, dict[str, Any]]:
    if file_id is None:
        return {}
    text = api.files.content(file_id).text
    return {x["custom_id"]: x for x in map(json.loads, text.splitlines())}


def _metric(text: str, name: str) -> float:
    return next(float(x.rsplit(" ", 1)[1]) for x in text.splitlines() if x.startswith(name + " "))


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server, Path]]:
    tmp = tmp_path_factory.mktemp("batches")
    with running(start_emulator(tmp)) as emulator:
        config = gateway_config(
            emulator.url,
            ledger={"url": f"sqlite:///{tmp / 'ledger.db'}"},
            upstream={"base_url": emulator.url, "poll_interval": 0.05, "max_jobs_per_token": 40},
        )
        with running(start_gateway(tmp, config)) as gateway:
            yield emulator, gateway, tmp


def test_a_chat_batch_answers_each_line_as_the_live_endpoint(
    grid: tuple[Server, Server, Path],
) -> None:
    emulator, gateway, tmp = grid
    api = openai.OpenAI(base_url=gateway.url + "/v1", api_key=ALICE_KEY, max_retries=0)
    good = [line(f"ok-{i}", chat(f"[[emulate:reply answer {i}]]")) for i in range(30)]
    bad_body = {"model": "gemma-2b", "messages": "not a list"}
    unknown = chat("hello", model="no-such-model")
    lines = [*good, line("bad", bad_body), line("unknown", unknown)]
    before = httpx.get(emulator.url + "/emulator/stats").json()
    uploaded = api.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
    made = api.batches.create(
        input_file_id=uploaded.id, endpoint=CHAT, completion_window="24h",
        metadata={"run": "nightly"},
    )  # fmt: skip
    check("Batch", made.model_dump(exclude_unset=True))
    assert made.status == "validating" and made.metadata == {"run": "nightly"}
    assert made.usage is not None and made.usage.total_tokens == 0
    done = wait_done(api, made.id)
    check("Batch", done.model_dump(exclude_unset=True))
    assert done.status == "completed", done
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed) == (32, 30)
    assert done.request_counts.failed == 2
    assert done.in_progress_at and done.finalizing_at and done.completed_at
    outputs, errors = results(api, done.output_file_id), results(api, done.error_file_id)
    assert sorted(outputs) == sorted(f"ok-{i}" for i in range(30))
    live = api.chat.completions.create(**chat("[[emulate:reply answer 7]]"))  # type: ignore[call-overload]
    body = outputs["ok-7"]["response"]["body"]
    check("CreateChatCompletionResponse", body)
    assert outputs["ok-7"]["response"]["status_code"] == 200
    assert (
        body["choices"][0]["message"]
        == live.model_dump(exclude_unset=True)["choices"][0]["message"]
    )
    assert body["usage"] == live.model_dump(exclude_unset=True)["usage"]
    assert set(body) == set(live.model_dump(exclude_unset=True))
    # Each bad line failed alone, with what the live endpoint answers to it.
    for custom_id, sent in (("bad", bad_body), ("unknown", unknown)):
        answer = httpx.post(
            gateway.url + CHAT, json=sent, headers={"authorization": f"Bearer {ALICE_KEY}"}
        )
        failed = errors[custom_id]["response"]
        assert (failed["status_code"], failed["body"]) == (answer.status_code, answer.json())
    # The lines rode multi-input submissions: far fewer POSTs than lines.
    after = httpx.get(emulator.url + "/emulator/stats").json()
    assert after["jobs_created"] - before["jobs_created"] == 31  # 30 lines + the live one
    assert after["submit_requests"] - before["submit_requests"] <= 8
    # The runner's metrics: lines ended, none in flight or queued once it is done.
    metrics = httpx.get(gateway.url + "/metrics").text
    assert _metric(metrics, 'gateway_batch_lines_total{outcome="done"}') >= 30
    assert _metric(metrics, 'gateway_batch_lines_total{outcome="failed"}') >= 2
    assert _metric(metrics, "gateway_batch_lines_in_flight") == 0
    # One ledger row per line that ran, marked as a batch by its endpoint (a line refused
    # before it named a known model has none, as a live request would not).
    time.sleep(0.5)
    with sqlite3.connect(tmp / "ledger.db") as db:
        rows = db.execute(
            "SELECT request_id, outcome FROM gateway_usage WHERE endpoint = '/v1/batches' "
            "AND request_id LIKE ?",
            (made.id + "-%",),
        ).fetchall()
    assert sorted(rows) == sorted((f"{made.id}-{i}", "ok") for i in range(30))
    # The batch's usage: what its lines' answers used, summed (the failed lines used none).
    used = [outputs[f"ok-{i}"]["response"]["body"]["usage"] for i in range(30)]
    assert done.usage is not None
    assert done.usage.input_tokens == sum(u["prompt_tokens"] for u in used) > 0
    assert done.usage.output_tokens == sum(u["completion_tokens"] for u in used) > 0
    assert done.usage.total_tokens == done.usage.input_tokens + done.usage.output_tokens
    assert (
        done.usage.input_tokens_details.cached_tokens,
        done.usage.output_tokens_details.reasoning_tokens,
    ) == (0, 0)
    with sqlite3.connect(tmp / "ledger.db") as db:
        charged = db.execute(
            "SELECT SUM(prompt_tokens), SUM(completion_tokens) FROM gateway_usage "
            "WHERE endpoint = '/v1/batches' AND request_id LIKE ?",
            (made.id + "-%",),
        ).fetchone()
    assert charged == (done.usage.input_tokens, done.usage.output_tokens)  # as the ledger says


@pytest.mark.parametrize(
    ("endpoint", "body", "kind"),
    [
        ("/v1/completions", {"model": "gemma-2b", "prompt": "[[emulate:reply hi there]]"},
         "CreateCompletionResponse"),
        ("/v1/responses", {"model": "gemma-2b", "input": "[[emulate:reply hi there]]"},
         "Response"),
    ],
    ids=["completions", "responses"],
)  # fmt: skip
def test_completions_and_responses_batches(
    grid: tuple[Server, Server, Path], endpoint: str, body: dict[str, Any], kind: str
) -> None:
    _, gateway, _ = grid
    api = openai.OpenAI(base_url=gateway.url + "/v1", api_key=ALICE_KEY, max_retries=0)
    lines = [line(f"r{i}", body, endpoint) for i in range(3)]
    uploaded = api.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
    made = api.batches.create(
        input_file_id=uploaded.id, endpoint=endpoint,  # type: ignore[arg-type]
        completion_window="24h",
    )  # fmt: skip
    done = wait_done(api, made.id)
    assert done.status == "completed" and done.error_file_id is None
    outputs = results(api, done.output_file_id)
    for output in outputs.values():
        check(kind, output["response"]["body"])
    texts = [
        o["response"]["body"]["choices"][0]["text"] if kind != "Response"
        else o["response"]["body"]["output"][0]["content"][0]["text"]
        for o in outputs.values()
    ]  # fmt: skip
    assert texts == ["hi there"] * 3
    check("Batch", done.model_dump(exclude_unset=True))
    used = [o["response"]["body"]["usage"] for o in outputs.values()]
    names = (
        ("input_tokens", "output_tokens")
        if kind == "Response"
        else ("prompt_tokens", "completion_tokens")
    )
    assert done.usage is not None
    assert (done.usage.input_tokens, done.usage.output_tokens) == tuple(
        sum(u[name] for u in used) for name in names
    )


def test_a_malformed_input_file_fails_the_batch_with_its_errors(
    grid: tuple[Server, Server, Path],
) -> None:
    _, gateway, _ = grid
    api = openai.OpenAI(base_url=gateway.url + "/v1", api_key=ALICE_KEY, max_retries=0)
    content = jsonl([line("a", chat("x")), line("a", chat("y")), line("c", chat("z"), "/v1/x")])
    uploaded = api.files.create(file=("in.jsonl", content + b"not json\n"), purpose="batch")
    made = api.batches.create(input_file_id=uploaded.id, endpoint=CHAT, completion_window="24h")
    check("Batch", made.model_dump(exclude_unset=True))
    assert made.status == "failed" and made.errors is not None
    assert [(e.line, e.code) for e in made.errors.data or []] == [
        (2, "duplicate_custom_id"), (3, "mismatched_endpoint"), (4, "invalid_json_line"),
    ]  # fmt: skip


def test_create_is_checked_and_batches_are_the_keys_own(
    grid: tuple[Server, Server, Path],
) -> None:
    _, gateway, _ = grid
    alice = openai.OpenAI(base_url=gateway.url + "/v1", api_key=ALICE_KEY, max_retries=0)
    bob = openai.OpenAI(base_url=gateway.url + "/v1", api_key=BOB_KEY, max_retries=0)
    uploaded = alice.files.create(file=("in.jsonl", jsonl([line("a", chat("x"))])), purpose="batch")
    with pytest.raises(openai.NotFoundError):  # another key's file does not exist for bob
        bob.batches.create(input_file_id=uploaded.id, endpoint=CHAT, completion_window="24h")
    with pytest.raises(openai.BadRequestError) as info:
        alice.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h"
        )
    assert info.value.body["param"] == "endpoint"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError):
        alice.batches.create(
            input_file_id=uploaded.id, endpoint=CHAT,
            completion_window="1h",  # type: ignore[arg-type]
        )  # fmt: skip
    earlier = alice.batches.create(
        input_file_id=uploaded.id, endpoint=CHAT, completion_window="24h"
    )
    made = alice.batches.create(input_file_id=uploaded.id, endpoint=CHAT, completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        bob.batches.retrieve(made.id)
    with pytest.raises(openai.NotFoundError):
        bob.batches.cancel(made.id)
    assert made.id not in [b.id for b in bob.batches.list()]
    listed = alice.batches.list(limit=1)
    check("ListBatchesResponse", listed.model_dump(exclude_unset=True))
    assert listed.data[0].id == made.id and listed.has_more  # the newest first, then earlier
    wait_done(alice, made.id)
    wait_done(alice, earlier.id)


def test_cancel_keeps_finished_lines_and_cancels_the_rest(
    grid: tuple[Server, Server, Path],
) -> None:
    _, gateway, _ = grid
    api = openai.OpenAI(base_url=gateway.url + "/v1", api_key=BOB_KEY, max_retries=0)
    slow = [line(f"s{i}", chat("[[emulate:words 40]] [[emulate:wps 10]]")) for i in range(200)]
    uploaded = api.files.create(file=("in.jsonl", jsonl(slow)), purpose="batch")
    made = api.batches.create(input_file_id=uploaded.id, endpoint=CHAT, completion_window="24h")
    time.sleep(1.0)
    cancelling = api.batches.cancel(made.id)
    assert cancelling.status in ("cancelling", "cancelled")
    check("Batch", cancelling.model_dump(exclude_unset=True))  # live counts and usage
    done = wait_done(api, made.id)
    check("Batch", done.model_dump(exclude_unset=True))
    assert done.status == "cancelled" and done.cancelled_at and done.cancelling_at
    outputs, errors = results(api, done.output_file_id), results(api, done.error_file_id)
    assert len(outputs) + len(errors) == 200
    cancelled = [e for e in errors.values() if e["error"]]
    assert cancelled and all(e["error"]["code"] == "batch_cancelled" for e in cancelled)
    assert done.request_counts is not None and done.request_counts.completed == len(outputs)
    assert done.usage is not None and done.usage.output_tokens == sum(
        o["response"]["body"]["usage"]["completion_tokens"] for o in outputs.values()
    )
    with pytest.raises(openai.ConflictError):
        api.batches.cancel(wait_done(api, api.batches.create(
            input_file_id=api.files.create(
                file=("one.jsonl", jsonl([line("x", chat("x"))])), purpose="batch"
            ).id, endpoint=CHAT, completion_window="24h",
        ).id).id)  # fmt: skip
