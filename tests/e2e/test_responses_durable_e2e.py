"""End to end: background responses survive a crash, a burst and a stalled database.

- a run answered ``200 queued`` and then killed (SIGKILL, no goodbye) at once is finished by the
  next gateway with the right text, and the service saw exactly one submission;
- 150 background runs at once on the default SQLite store: every POST answers 200, every run
  completes;
- PostgreSQL stalled behind a proxy (connections open, nothing answered): stored requests answer
  the documented 503 within the database timeout, requests that store nothing do not wait.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import openai
import pytest

from tests.e2e.conftest import emulator_stats
from tests.e2e.proxy import stalling_proxy
from tests.e2e.servers import ALICE_KEY, Server, gateway_config, start_gateway

DATABASE_URL = os.environ.get("DATABASE_URL")
WORDS = "a b c d e f g h i j"
REPLY = " ".join(f"word{i}" for i in range(20))


def _retrieve_until(api: openai.OpenAI, rid: str, limit: float = 30) -> Any:
    deadline = time.monotonic() + limit
    while True:
        got = api.responses.retrieve(rid)
        if got.status not in ("queued", "in_progress") or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def _jobs_created(emulator: Server) -> int:
    return int(emulator_stats(emulator)["jobs_created"])  # type: ignore[call-overload]


@pytest.mark.parametrize(
    "database",
    [
        "sqlite",
        pytest.param(
            "postgres", marks=pytest.mark.skipif(not DATABASE_URL, reason="DATABASE_URL unset")
        ),
    ],
)
def test_a_run_killed_right_after_its_200_is_finished_once_by_the_next_gateway(
    emulator: Server, tmp_path: Path, database: str
) -> None:
    table = f"resp_kill_{uuid.uuid4().hex[:10]}"
    url = f"sqlite:///{tmp_path / 'r.db'}" if database == "sqlite" else str(DATABASE_URL)
    config = gateway_config(
        emulator.url,
        responses={"store_url": url, "table": table, "background_lease_seconds": 1},
    )
    before = _jobs_created(emulator)
    first = start_gateway(tmp_path, config)
    try:
        api = openai.OpenAI(base_url=first.url + "/v1", api_key=ALICE_KEY, max_retries=0)
        made = api.responses.create(
            model="gemma-2b",
            input=f"[[emulate:wps 20]] [[emulate:reply {REPLY}]]",
            background=True,
        )
    finally:
        first.stop(signal.SIGKILL)  # at once: before any progress save
    assert made.status == "queued"
    second = start_gateway(tmp_path, config)
    try:
        api = openai.OpenAI(base_url=second.url + "/v1", api_key=ALICE_KEY, max_retries=0)
        done = _retrieve_until(api, made.id)
        assert done.status == "completed", (done.error, second.output())
        assert done.output_text == REPLY
    finally:
        second.stop()
        if database == "postgres":
            asyncio.run(_drop(table))
    assert _jobs_created(emulator) - before == 1  # followed again, never submitted again


def _burst_body(i: int) -> dict[str, Any]:
    """Half of them streamed: their tails read the store while the others write."""
    return {
        "model": "gemma-2b",
        "input": f"run {i} [[emulate:wps 10]] [[emulate:reply done{i} {WORDS}]]",
        "stream": i % 2 == 1,
        "background": True,
    }


def test_150_background_runs_at_once_on_the_default_sqlite_store(
    emulator: Server, tmp_path: Path
) -> None:
    config = gateway_config(
        emulator.url,
        ledger={"url": f"sqlite:///{tmp_path / 'gateway.db'}"},  # the default: one file for all
    )
    server = start_gateway(tmp_path, config)

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(timeout=120, limits=limits) as http:
            return list(
                await asyncio.gather(
                    *(
                        http.post(
                            server.url + "/v1/responses",
                            headers={"authorization": f"Bearer {ALICE_KEY}"},
                            json=_burst_body(i),
                        )
                        for i in range(150)
                    )
                )
            )

    try:
        answers = asyncio.run(burst())
        statuses = [a.status_code for a in answers]
        assert statuses == [200] * 150, [
            (a.status_code, a.text[:200]) for a in answers if a.status_code != 200
        ][:3]
        assert "InterfaceError" not in server.output()
        polled = asyncio.run(_poll_all(server, [_response_id(a) for a in answers]))
        assert set(polled) == {200}, polled  # read while 150 runs write: never a 5xx
        assert "InterfaceError" not in server.output()
        api = openai.OpenAI(base_url=server.url + "/v1", api_key=ALICE_KEY, max_retries=0)
        for i, answer in enumerate(answers):
            done = _retrieve_until(api, _response_id(answer), limit=60)
            assert (done.status, done.output_text) == ("completed", f"done{i} {WORDS}")
    finally:
        server.stop()


async def _poll_all(server: Server, ids: list[str]) -> list[int]:
    """Every run retrieved every 100 ms, all at once, until it ends: the last status of each."""
    limits = httpx.Limits(max_connections=200)
    headers = {"authorization": f"Bearer {ALICE_KEY}"}
    async with httpx.AsyncClient(timeout=120, limits=limits, headers=headers) as http:

        async def one(rid: str) -> int:
            for _ in range(300):
                got = await http.get(f"{server.url}/v1/responses/{rid}")
                if got.status_code != 200:
                    return got.status_code
                if got.json()["status"] not in ("queued", "in_progress"):
                    return 200
                await asyncio.sleep(0.1)
            return 0

        return list(await asyncio.gather(*(one(rid) for rid in ids)))


def _response_id(answer: httpx.Response) -> str:
    if answer.headers["content-type"].startswith("text/event-stream"):
        first = next(line for line in answer.text.splitlines() if line.startswith("data:"))
        return str(json.loads(first.removeprefix("data:"))["response"]["id"])
    return str(answer.json()["id"])


needs_postgres = pytest.mark.skipif(not DATABASE_URL, reason="DATABASE_URL unset")


async def _drop(table: str) -> None:
    conn = await asyncpg.connect(DATABASE_URL)
    try:
        for suffix in ("", "_items", "_events"):
            await conn.execute(f"DROP TABLE IF EXISTS {table}{suffix}")
    finally:
        await conn.close()


@needs_postgres
def test_a_stalled_database_answers_503_in_time_and_live_requests_do_not_wait(
    emulator: Server, tmp_path: Path
) -> None:
    assert DATABASE_URL is not None
    table = f"resp_stall_{uuid.uuid4().hex[:10]}"
    target = httpx.URL(DATABASE_URL.replace("postgresql://", "http://"))
    with stalling_proxy(target.host, target.port or 5432) as proxy:
        url = f"postgresql://{target.userinfo.decode()}@127.0.0.1:{proxy.port}{target.path}"
        config = gateway_config(
            emulator.url,
            ledger={"url": "sqlite:///:memory:", "db_timeout_seconds": 2},
            responses={"store_url": url, "table": table},
        )
        server = start_gateway(tmp_path, config)
        try:
            api = openai.OpenAI(
                base_url=server.url + "/v1", api_key=ALICE_KEY, max_retries=0, timeout=60
            )
            stored = api.responses.create(model="gemma-2b", input="[[emulate:reply kept]]")
            assert stored.output_text == "kept"
            proxy.stall()

            start = time.monotonic()
            with pytest.raises(openai.APIStatusError) as refused:
                api.responses.create(
                    model="gemma-2b", input="[[emulate:reply later]]", background=True
                )
            assert refused.value.status_code == 503, refused.value.response.text
            assert refused.value.code == "store_unavailable"
            assert time.monotonic() - start < 8  # the timeout (2 s) and a retry, not the stall

            start = time.monotonic()
            with pytest.raises(openai.APIStatusError) as unread:
                api.responses.retrieve(stored.id)
            assert unread.value.status_code == 503
            assert time.monotonic() - start < 8

            start = time.monotonic()
            live = api.responses.create(
                model="gemma-2b", input="[[emulate:reply live]]", store=False
            )
            assert live.output_text == "live"
            assert time.monotonic() - start < 3  # never waits for the store

            proxy.resume()
            deadline = time.monotonic() + 20
            while True:  # the pool recovers by itself
                try:
                    assert api.responses.retrieve(stored.id).output_text == "kept"
                    break
                except openai.APIStatusError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
            assert "Traceback" not in server.output()
        finally:
            server.stop()
            proxy.resume()
    asyncio.run(_drop(table))
