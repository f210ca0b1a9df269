"""End to end: batched submissions through real servers, driven by the openai SDK.

A private emulator and gateway per module, so the emulator's counters of submissions and
jobs are this module's own (``POST /emulator/stats/reset`` before each test).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import openai
import pytest

from gateway.emulator import reply_for
from tests.e2e.conftest import emulator_stats
from tests.e2e.servers import (
    ALICE_KEY,
    Server,
    gateway_config,
    running,
    start_emulator,
    start_gateway,
)

#: Long enough that a hundred requests parsed one after the other on a busy machine still
#: fall into a few windows.
WINDOW_MS = 300


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running(start_emulator(tmp_path_factory.mktemp("economy-emulator"))) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(emulator: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    config = gateway_config(
        emulator.url,
        upstream={
            "base_url": emulator.url,
            "poll_interval": 0.05,
            "submit_batch_window": WINDOW_MS,
        },
    )
    with running(start_gateway(tmp_path_factory.mktemp("economy-gateway"), config)) as server:
        yield server


@pytest.fixture(autouse=True)
def fresh_counts(emulator: Server) -> Iterator[None]:
    httpx.delete(emulator.url + "/emulator/faults")
    httpx.post(emulator.url + "/emulator/stats/reset")
    yield
    httpx.delete(emulator.url + "/emulator/faults")


def async_client(gateway: Server) -> openai.AsyncOpenAI:
    http = httpx.AsyncClient(limits=httpx.Limits(max_connections=200), timeout=60)
    return openai.AsyncOpenAI(
        base_url=gateway.url + "/v1", api_key=ALICE_KEY, max_retries=0, http_client=http
    )


async def test_a_hundred_different_requests_go_up_in_a_handful_of_submissions(
    gateway: Server, emulator: Server
) -> None:
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
    assert isinstance(stats["submit_requests"], int) and stats["submit_requests"] <= 5, stats
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

    results = await asyncio.gather(*(ask(p) for p in prompts), return_exceptions=True)
    bad = results[-1]
    assert isinstance(bad, openai.APIStatusError) and bad.status_code == 502
    assert "Invalid input format" in str(bad)
    assert all(isinstance(text, str) and text for text in results[:-1])
    stats = emulator_stats(emulator)
    assert stats["submit_requests"] == 1 + len(prompts)  # the batch, then each member alone
    assert stats["jobs_created"] == len(prompts) - 1
    await client.close()
