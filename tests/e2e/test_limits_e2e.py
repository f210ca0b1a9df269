"""End to end: per-key limits, the usage ledger, reloads and the per-account job cap.

Real gateway processes in front of the emulator; limits shared through a real Redis
(``REDIS_URL``), the ledger in a real PostgreSQL (``DATABASE_URL``). Every run uses its own
Redis key prefix and its own ledger table, and removes them afterwards. The Redis outage test
kills a private ``redis-server`` of its own, never the machine's.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import openai
import pytest
import redis
import yaml

from gateway.emulator import reply_for
from tests.e2e.conftest import job_prompt
from tests.e2e.servers import (
    ALICE_KEY,
    ALICE_TOKEN,
    BOB_KEY,
    BOB_TOKEN,
    Server,
    free_port,
    gateway_config,
    start_gateway,
)

REDIS_URL = os.environ.get("REDIS_URL")
DATABASE_URL = os.environ.get("DATABASE_URL")

needs_redis = pytest.mark.skipif(
    not REDIS_URL,
    reason="set REDIS_URL (e.g. redis://127.0.0.1:6379/0) to check limits shared across replicas",
)
needs_postgres = pytest.mark.skipif(
    not DATABASE_URL,
    reason="set DATABASE_URL (e.g. postgresql://postgres@127.0.0.1:5432/test) for the ledger",
)
needs_redis_server = pytest.mark.skipif(
    shutil.which("redis-server") is None,
    reason="the Redis outage test starts (and kills) its own redis-server, which is not installed",
)

CHAT = "/v1/chat/completions"
ADMIN_KEY = "sk-test-admin-0123456789"
BURST_KEY = "sk-test-burst-0123456789"
CONC_KEY = "sk-test-conc-0123456789"
SERIAL_KEY = "sk-test-serial-0123456789"
COUNT_KEY = "sk-test-count-0123456789"
LEDGER_KEY = "sk-test-ledger-0123456789"
ONE_MODEL_KEY = "sk-test-one-model-0123456789"
EXPIRED_KEY = "sk-test-expired-0123456789"
DISABLED_KEY = "sk-test-disabled-0123456789"
BUDGET_KEY = "sk-test-budget-0123456789"
FLOOD_KEY = "sk-test-flood-0123456789"
FLOOD_RPM = 50
BUDGET = 300
BURST_RPM = 6
COUNT_RPM, COUNT_TPM = 100, 100_000
SHORT = "[[emulate:reply ok]] [[emulate:queue 0]]"


def key(name: str, secret: str, token: str = ALICE_TOKEN, **limits: Any) -> dict[str, Any]:
    return {"name": name, "key": secret, "upstream_token": token, **limits}


CLUSTER_KEYS = [
    key("alice", ALICE_KEY),
    key("bob", BOB_KEY, BOB_TOKEN),
    key("burst", BURST_KEY, rpm=BURST_RPM),
    key("conc", CONC_KEY, BOB_TOKEN, max_concurrent=2),
    key("serial", SERIAL_KEY, BOB_TOKEN, max_concurrent=1),
    key("count", COUNT_KEY, rpm=COUNT_RPM, tpm=COUNT_TPM),
    key("flood", FLOOD_KEY, BOB_TOKEN, rpm=FLOOD_RPM),
    key("ledger", LEDGER_KEY, models=["gemma-2b"]),
    key("budget", BUDGET_KEY, BOB_TOKEN, daily_tokens=BUDGET),
    key("one-model", ONE_MODEL_KEY, models=["gemma-2b"]),
    key("expired", EXPIRED_KEY, expires_at="2020-01-01T00:00:00Z"),
    key("disabled", DISABLED_KEY, disabled=True),
]


def auth(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


def chat(content: str, **extra: Any) -> dict[str, Any]:
    return {"model": "gemma-2b", "messages": [{"role": "user", "content": content}], **extra}


def sdk(server: Server, secret: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=secret, max_retries=0)


def config_path(server: Server) -> Path:
    """The YAML file ``start_gateway`` wrote for ``server`` (and the gateway re-reads)."""
    path = server.log.with_name(f"gateway-{server.port}.yaml")
    assert path.exists(), path
    return path


def start_gateways(tmp: Path, configs: Sequence[dict[str, Any]]) -> list[Server]:
    """Start several gateways at once (each takes a while to import and bind)."""
    with ThreadPoolExecutor(len(configs)) as pool:
        futures = [pool.submit(start_gateway, tmp, config) for config in configs]
    started = [f.result() for f in futures if f.exception() is None]
    failures = [f.exception() for f in futures if f.exception() is not None]
    if failures:
        stop_all(started)
        raise failures[0]  # type: ignore[misc]
    return started


def stop_all(servers: Sequence[Server]) -> None:
    """Stop several servers at once (each waits for its own graceful shutdown)."""
    with ThreadPoolExecutor(max(1, len(servers))) as pool:
        list(pool.map(lambda server: server.stop(), servers))


def run_gateway_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "GATEWAY_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=True,
    )


def degraded(server: Server) -> float:
    text = httpx.get(server.url + "/metrics").text
    match = re.search(r"^gateway_limits_degraded (\S+)$", text, re.MULTILINE)
    assert match, "gateway_limits_degraded is missing from /metrics"
    return float(match.group(1))


def error_code(response: httpx.Response) -> str:
    code: str = response.json()["error"]["code"]
    return code


async def eventually(attempt: Any, accept: Any, what: str, limit: float = 15.0) -> httpx.Response:
    """Repeat ``attempt()`` until ``accept(answer)``; fail after ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while True:
        answer: httpx.Response = await attempt()
        if accept(answer):
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still {answer.status_code} {answer.text[:300]}")
        await asyncio.sleep(0.1)


def drop_redis_prefix(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


async def drop_table(url: str, table: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
    finally:
        await conn.close()


# --- three replicas sharing one Redis and one PostgreSQL table ---------------------------------


@dataclass
class Cluster:
    gateways: list[Server]
    table: str | None


@pytest.fixture(scope="module")
def cluster(emulator: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    run = uuid.uuid4().hex[:12]
    prefix, table = f"gateway-e2e:{run}:", f"usage_e2e_{run}"
    overrides: dict[str, Any] = {
        "keys": CLUSTER_KEYS,
        "admin": {"key": ADMIN_KEY},
        "server": {"graceful_shutdown_seconds": 3},
    }
    if REDIS_URL:
        # A generous timeout: on a loaded machine a slow answer must not count as an outage.
        overrides["redis"] = {"url": REDIS_URL, "prefix": prefix, "timeout": 2.0}
    if DATABASE_URL:
        overrides["ledger"] = {"url": DATABASE_URL, "table": table}
    config = gateway_config(emulator.url, **overrides)
    gateways = start_gateways(tmp_path_factory.mktemp("cluster"), [config] * 3)
    try:
        yield Cluster(gateways, table if DATABASE_URL else None)
    finally:
        stop_all(gateways)
        if REDIS_URL:
            drop_redis_prefix(REDIS_URL, prefix)
        if DATABASE_URL:
            asyncio.run(drop_table(DATABASE_URL, table))


@needs_redis
async def test_a_burst_across_three_replicas_admits_exactly_the_rpm(cluster: Cluster) -> None:
    body = chat(f"burst {SHORT}")
    async with httpx.AsyncClient(timeout=30) as http:
        answers = await asyncio.gather(
            *(
                http.post(cluster.gateways[i % 3].url + CHAT, json=body, headers=auth(BURST_KEY))
                for i in range(15)
            )
        )
    admitted = [a for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code == 429]
    assert (len(admitted), len(refused)) == (BURST_RPM, 15 - BURST_RPM), [
        a.status_code for a in answers
    ]
    # One atomic window: every admitted request saw a different count.
    remaining = sorted(int(a.headers["x-ratelimit-remaining-requests"]) for a in admitted)
    assert remaining == list(range(BURST_RPM))
    for answer in refused:
        error = answer.json()["error"]
        assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")
        assert int(answer.headers["retry-after"]) >= 1
        assert answer.headers["x-ratelimit-limit-requests"] == str(BURST_RPM)
        assert answer.headers["x-ratelimit-remaining-requests"] == "0"
        assert answer.headers["x-ratelimit-reset-requests"].endswith("s")


@needs_redis
async def test_a_burst_beyond_the_redis_pool_admits_exactly_the_rpm(cluster: Cluster) -> None:
    """1,000 at once, over 300 per replica: far more than a Redis pool has connections.

    A pool that raised when full read as "Redis is down", and fail-open admitted most of them.
    """
    body = chat(f"flood {SHORT}")
    count = 1000
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        answers = await asyncio.gather(
            *(
                http.post(cluster.gateways[i % 3].url + CHAT, json=body, headers=auth(FLOOD_KEY))
                for i in range(count)
            )
        )
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) == FLOOD_RPM, sorted(set(statuses))
    assert statuses.count(429) == count - FLOOD_RPM, sorted(set(statuses))
    assert all(degraded(server) == 0 for server in cluster.gateways)


@needs_redis
async def test_max_concurrent_holds_across_replicas(cluster: Cluster) -> None:
    first_gw, second_gw, third_gw = cluster.gateways
    hang = chat("hold the line [[emulate:hang]] [[emulate:queue 0]]", stream=True)
    async with httpx.AsyncClient(timeout=30) as http:

        def holding(server: Server) -> httpx.Request:
            return http.build_request("POST", server.url + CHAT, json=hang, headers=auth(CONC_KEY))

        async def short(server: Server) -> httpx.Response:
            return await http.post(server.url + CHAT, json=chat(SHORT), headers=auth(CONC_KEY))

        first = await http.send(holding(first_gw), stream=True)
        second = await http.send(holding(second_gw), stream=True)
        try:
            assert (first.status_code, second.status_code) == (200, 200)
            refused = await short(third_gw)
            assert refused.status_code == 429, refused.text
            assert error_code(refused) == "concurrency_limit_exceeded"
            assert int(refused.headers["retry-after"]) >= 1

            await first.aclose()  # the client leaves: its replica frees the slot in Redis
            admitted = await eventually(
                lambda: short(third_gw), lambda a: a.status_code != 429, "slot not freed"
            )
            assert admitted.status_code == 200, admitted.text

            third = await http.send(holding(third_gw), stream=True)
            try:
                assert third.status_code == 200
                again = await short(first_gw)
                assert again.status_code == 429 and error_code(again) == (
                    "concurrency_limit_exceeded"
                )
            finally:
                await third.aclose()
        finally:
            await first.aclose()
            await second.aclose()


@needs_redis
def test_one_request_at_a_time_is_never_refused(cluster: Cluster) -> None:
    """With ``max_concurrent: 1`` a client that sends each request the moment the last answer
    arrived must never meet its own previous slot: the slot is freed before the answer's last
    bytes are written (the Redis release is a network round trip, so the race is real)."""
    client = sdk(cluster.gateways[0], SERIAL_KEY)
    user = [{"role": "user", "content": SHORT}]
    for _ in range(15):
        answer = client.chat.completions.create(model="gemma-2b", messages=user)
        assert answer.choices[0].message.content == "ok"
        stream = client.chat.completions.create(model="gemma-2b", messages=user, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "ok"


def test_models_expiry_and_disabled_keys_are_refused(cluster: Cluster) -> None:
    gateway = cluster.gateways[0]
    user = [{"role": "user", "content": SHORT}]
    allowed = sdk(gateway, ONE_MODEL_KEY)
    assert allowed.chat.completions.create(model="gemma-2b", messages=user).choices
    # An alias of an allowed model is the same model.
    assert allowed.chat.completions.create(model="gpt-3.5-turbo", messages=user).choices
    # A model the key may not use answers exactly like an unknown one (issue 12, item 7).
    with pytest.raises(openai.NotFoundError) as missing:
        allowed.chat.completions.create(model="llama2-uncensored", messages=user)
    assert missing.value.code == "model_not_found"
    cases = [
        (EXPIRED_KEY, "gemma-2b", "key_expired"),
        (DISABLED_KEY, "gemma-2b", "key_disabled"),
    ]
    for secret, model, code in cases:
        with pytest.raises(openai.PermissionDeniedError) as info:
            sdk(gateway, secret).chat.completions.create(model=model, messages=user)
        assert info.value.status_code == 403
        assert info.value.code == code
        assert isinstance(info.value.body, dict) and set(info.value.body) >= {"message", "type"}
    # The same refusal on a streamed request, before any byte of a stream.
    answer = httpx.post(
        gateway.url + CHAT,
        json={**chat(SHORT, stream=True), "model": "llama2-uncensored"},
        headers=auth(ONE_MODEL_KEY),
    )
    assert answer.status_code == 404 and error_code(answer) == "model_not_found"


def test_remaining_requests_count_down_on_json_and_streams(cluster: Cluster) -> None:
    # With Redis the count is one across the replicas; without it, ask one replica only.
    gateways = cluster.gateways if REDIS_URL else cluster.gateways[:1]
    requests_left: list[int] = []
    tokens_left: list[int] = []
    with httpx.Client(timeout=30) as http:
        for i in range(6):
            url = gateways[i % len(gateways)].url + CHAT
            if i % 2:
                body = chat(f"count {i} [[emulate:words 5]]", stream=True)
                with http.stream("POST", url, json=body, headers=auth(COUNT_KEY)) as answer:
                    headers = answer.headers  # sent with the status line, before the first event
                    text = answer.read().decode()
                assert headers["content-type"].startswith("text/event-stream")
                assert text.rstrip().endswith("data: [DONE]")
            else:
                answer = http.post(url, json=chat(f"count {i} {SHORT}"), headers=auth(COUNT_KEY))
                headers = answer.headers
            assert answer.status_code == 200
            assert headers["x-ratelimit-limit-requests"] == str(COUNT_RPM)
            assert headers["x-ratelimit-limit-tokens"] == str(COUNT_TPM)
            assert headers["x-ratelimit-reset-requests"]
            assert headers["x-ratelimit-reset-tokens"]
            requests_left.append(int(headers["x-ratelimit-remaining-requests"]))
            tokens_left.append(int(headers["x-ratelimit-remaining-tokens"]))
    assert requests_left == [COUNT_RPM - 1 - i for i in range(6)]
    assert all(a > b for a, b in itertools.pairwise(tokens_left)), tokens_left


def test_daily_budget_counts_actual_tokens_across_replicas(cluster: Cluster) -> None:
    if 86_400 - time.time() % 86_400 < 30:
        pytest.skip("the UTC day ends within seconds: the requests could count in two days")
    gateways = cluster.gateways if REDIS_URL else cluster.gateways[:1]
    url = [g.url + CHAT for g in (gateways * 3)[:3]]
    body = chat(f"budget {SHORT}")
    with httpx.Client(timeout=30) as http:

        def ask(where: str, max_tokens: int) -> httpx.Response:
            return http.post(
                where, json={**body, "max_tokens": max_tokens}, headers=auth(BUDGET_KEY)
            )

        first = ask(url[0], 50)
        assert first.status_code == 200, first.text
        usage = first.json()["usage"]
        prompt, used = usage["prompt_tokens"], usage["total_tokens"]
        # Charged at admission: prompt + max_tokens; corrected to the actual count at the end.
        room = BUDGET - used
        too_much = ask(url[1], room - prompt + 1)
        assert too_much.status_code == 429, too_much.text
        assert error_code(too_much) == "budget_exceeded"
        assert int(too_much.headers["retry-after"]) >= 1  # the next UTC day
        exactly = ask(url[2], room - prompt)
        assert exactly.status_code == 200, exactly.text


# --- the ledger ---------------------------------------------------------------------------------


async def ledger_rows(table: str, key_name: str, count: int) -> list[asyncpg.Record]:
    """The ledger rows of ``key_name`` once there are ``count`` (writes are asynchronous)."""
    assert DATABASE_URL is not None
    conn = await asyncpg.connect(DATABASE_URL)
    try:
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(asyncpg.UndefinedTableError):
                rows: list[asyncpg.Record] = await conn.fetch(
                    f"SELECT * FROM {table} WHERE key_name = $1 ORDER BY time", key_name
                )
                # A request's in-flight row (written at admission) counts once it is final.
                if len(rows) >= count and all(r["outcome"] != "in_flight" for r in rows):
                    return rows
            if time.monotonic() > deadline:
                raise AssertionError(f"only {len(rows)} of {count} ledger rows for {key_name}")
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


@dataclass
class Sent:
    request_id: str
    job_ids: list[str]
    stream: bool
    status: int
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


def send_ledger_traffic(gateways: Sequence[Server]) -> list[Sent]:
    """The ledger key over three replicas: JSON, stream, n=2 (by an alias), refused, failed."""
    sent: list[Sent] = []
    client = sdk(gateways[0], LEDGER_KEY)
    raw = client.chat.completions.with_raw_response.create(
        model="gemma-2b", messages=[{"role": "user", "content": "one [[emulate:words 12]]"}]
    )
    usage = raw.parse().usage
    assert usage is not None
    sent.append(
        Sent(
            raw.headers["x-request-id"],
            raw.headers["x-job-id"].split(","),
            False,
            200,
            usage.prompt_tokens,
            usage.completion_tokens,
        )
    )

    client = sdk(gateways[1], LEDGER_KEY)
    stream = client.chat.completions.with_raw_response.create(
        model="gemma-2b",
        messages=[{"role": "user", "content": "two [[emulate:words 9]]"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream.parse())
    usage = chunks[-1].usage
    assert usage is not None and not chunks[-1].choices
    sent.append(
        Sent(
            stream.headers["x-request-id"],
            stream.headers["x-job-id"].split(","),
            True,
            200,
            usage.prompt_tokens,
            usage.completion_tokens,
        )
    )

    client = sdk(gateways[2], LEDGER_KEY)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-3.5-turbo", messages=[{"role": "user", "content": "three"}], n=2
    )
    usage = raw.parse().usage
    assert usage is not None
    job_ids = raw.headers["x-job-id"].split(",")
    assert len(job_ids) == 2
    sent.append(
        Sent(
            raw.headers["x-request-id"],
            job_ids,
            False,
            200,
            usage.prompt_tokens,
            usage.completion_tokens,
        )
    )

    refused = httpx.post(
        gateways[1].url + CHAT,
        json={**chat("five"), "model": "llama2-uncensored"},
        headers=auth(LEDGER_KEY),
        timeout=30,
    )
    assert refused.status_code == 404, refused.text  # like an unknown model (issue 12, item 7)
    sent.append(Sent(refused.headers["x-request-id"], [], False, 404, 0, 0))

    failed = httpx.post(
        gateways[0].url + CHAT,
        json=chat("four [[emulate:fail boom]]"),
        headers=auth(LEDGER_KEY),
        timeout=30,
    )
    assert failed.status_code == 502, failed.text
    sent.append(
        Sent(failed.headers["x-request-id"], failed.headers["x-job-id"].split(","), False, 502)
    )
    return sent


@needs_postgres
async def test_ledger_rows_reports_and_usage_endpoints(cluster: Cluster) -> None:
    assert cluster.table is not None
    gateways = cluster.gateways
    sent = await asyncio.to_thread(send_ledger_traffic, gateways)
    rows = await ledger_rows(cluster.table, "ledger", len(sent))
    assert len(rows) == len(sent)
    by_request = {row["request_id"]: row for row in rows}
    for one in sent:
        row = by_request[one.request_id]
        assert json.loads(row["job_ids"]) == one.job_ids
        # Aliases are recorded under the model's name.
        assert row["model"] == ("llama2-uncensored" if one.status == 404 else "gemma-2b")
        assert row["endpoint"] == CHAT
        assert row["stream"] is one.stream
        assert row["status_code"] == one.status
        assert row["prompt_text"] is None  # prompts are kept only when an operator asks
        assert row["duration_ms"] > 0
        if one.status == 502:
            assert row["outcome"] == "job_failed"
        else:  # answered, or refused before any job ran (no tokens used)
            assert row["outcome"] == ("ok" if one.status == 200 else "model_not_allowed")
            assert (row["prompt_tokens"], row["completion_tokens"]) == (
                one.prompt_tokens,
                one.completion_tokens,
            )

    answered = [r for r in rows if r["model"] == "gemma-2b"]
    expected = {
        "key_name": "ledger",
        "model": "gemma-2b",
        "requests": len(answered),
        "errors": 1,
        "prompt_tokens": sum(r["prompt_tokens"] for r in answered),
        "completion_tokens": sum(r["completion_tokens"] for r in answered),
    }
    expected["total_tokens"] = expected["prompt_tokens"] + expected["completion_tokens"]

    path = str(config_path(gateways[0]))
    printed = await asyncio.to_thread(
        run_gateway_cli, "usage", "--config", path, "--json", "--key", "ledger"
    )
    report = json.loads(printed.stdout)
    assert [(r["key_name"], r["model"]) for r in report] == [
        ("ledger", "gemma-2b"),
        ("ledger", "llama2-uncensored"),
    ]
    assert {k: report[0][k] for k in expected} == expected
    assert report[1]["requests"] == report[1]["errors"] == 1
    assert report[1]["total_tokens"] == 0
    table = await asyncio.to_thread(run_gateway_cli, "usage", "--config", path, "--key", "ledger")
    assert re.search(rf"ledger\s+gemma-2b\s+{len(answered)}\s+1\s", table.stdout), table.stdout

    # Some other key's usage, so that filtering by key has something to leave out.
    sdk(gateways[1], ALICE_KEY).chat.completions.create(
        model="gemma-2b", messages=[{"role": "user", "content": SHORT}]
    )
    await ledger_rows(cluster.table, "alice", 1)

    async with httpx.AsyncClient(timeout=30) as http:
        url = gateways[2].url
        for headers in ({}, auth("sk-not-the-admin-key")):
            refused = await http.get(url + "/admin/usage", headers=headers)
            assert refused.status_code == 401, refused.text
        # A gateway key is known, just not allowed here (the admin API contract).
        refused = await http.get(url + "/admin/usage", headers=auth(LEDGER_KEY))
        assert refused.status_code == 403, refused.text
        admin = await http.get(url + "/admin/usage", headers=auth(ADMIN_KEY))
        assert admin.status_code == 200
        assert {"alice", "ledger"} <= {row["key_name"] for row in admin.json()["data"]}
        admin = await http.get(url + "/admin/usage?key=ledger", headers=auth(ADMIN_KEY))
        assert admin.json()["data"] == report

        own = await http.get(url + "/v1/usage", headers=auth(LEDGER_KEY))
        assert own.status_code == 200
        assert own.json()["data"] == report
        # Asking for someone else's usage still answers with one's own.
        own = await http.get(url + "/v1/usage?key=alice", headers=auth(LEDGER_KEY))
        assert own.json()["data"] == report
        alice = await http.get(url + "/v1/usage", headers=auth(ALICE_KEY))
        assert {row["key_name"] for row in alice.json()["data"]} == {"alice"}
        assert (await http.get(url + "/v1/usage")).status_code == 401


# --- losing Redis -------------------------------------------------------------------------------


class RedisProcess:
    """A private redis-server on a free loopback port that a test may kill and start again."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        try:
            while True:
                with contextlib.suppress(redis.ConnectionError):
                    if client.ping():
                        return
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on port {self.port}")
                time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None


@dataclass
class Outage:
    redis: RedisProcess
    fail_open: Server
    fail_closed: Server


@pytest.fixture(scope="module")
def outage(emulator: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outage]:
    tmp = tmp_path_factory.mktemp("outage")
    private = RedisProcess(tmp)
    private.start()
    # The ledger's database is down too: that must not hold up or fail a request either.
    dead_ledger = f"postgresql://postgres@127.0.0.1:{free_port()}/gone"
    try:
        configs = [
            gateway_config(
                emulator.url,
                keys=[key("alice", ALICE_KEY, rpm=1000)],
                redis={
                    "url": private.url,
                    "prefix": "outage:",
                    "failure_policy": policy,
                    "timeout": 2.0,  # a killed Redis refuses at once; this only absorbs load
                    "probe_interval": 0.2,
                },
                server={"graceful_shutdown_seconds": 3},
                ledger={"url": dead_ledger},
            )
            for policy in ("open", "closed")
        ]
        fail_open, fail_closed = start_gateways(tmp, configs)
        try:
            yield Outage(private, fail_open, fail_closed)
        finally:
            stop_all([fail_open, fail_closed])
    finally:
        private.kill()


@needs_redis_server
async def test_a_burst_is_not_an_outage_even_fail_closed(outage: Outage) -> None:
    """300 at once through a pool of 100: a pool that raised when full refused them with 503."""
    count = 300
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        answers = await asyncio.gather(
            *(
                http.post(outage.fail_closed.url + CHAT, json=chat(SHORT), headers=auth(ALICE_KEY))
                for _ in range(count)
            )
        )
    statuses = [a.status_code for a in answers]
    assert statuses == [200] * count, sorted(set(statuses))
    assert degraded(outage.fail_closed) == 0


@needs_redis_server
async def test_losing_redis_follows_the_policy_and_recovers(outage: Outage) -> None:
    both = (outage.fail_open, outage.fail_closed)
    slow = chat("[[emulate:words 16]] [[emulate:wps 16]] [[emulate:queue 0]]", stream=True)
    async with httpx.AsyncClient(timeout=30) as http:

        async def short(server: Server) -> httpx.Response:
            return await http.post(server.url + CHAT, json=chat(SHORT), headers=auth(ALICE_KEY))

        for server in both:
            answer = await short(server)
            assert answer.status_code == 200 and "x-ratelimit-remaining-requests" in answer.headers
            assert degraded(server) == 0

        streams = [
            await http.send(
                http.build_request("POST", s.url + CHAT, json=slow, headers=auth(ALICE_KEY)),
                stream=True,
            )
            for s in both
        ]
        assert [s.status_code for s in streams] == [200, 200]

        outage.redis.kill()
        remaining = []
        for _ in range(3):
            served = await short(outage.fail_open)
            assert served.status_code == 200, served.text
            remaining.append(served.headers["x-ratelimit-remaining-requests"])
            refused = await short(outage.fail_closed)
            assert refused.status_code == 503, refused.text
            assert error_code(refused) == "limits_unavailable"
            assert int(refused.headers["retry-after"]) >= 1
        # Open, by this process's own counters (rpm 1000), which began with the outage.
        assert remaining == ["999", "998", "997"], remaining
        assert degraded(outage.fail_open) == 1
        assert degraded(outage.fail_closed) == 1
        assert "limit store unavailable" in outage.fail_open.output()
        assert "failure_policy=closed" in outage.fail_closed.output()

        # Streams admitted before the outage run to their end under either policy.
        for stream in streams:
            body = (await stream.aread()).decode()
            await stream.aclose()
            assert body.rstrip().endswith("data: [DONE]") and '"error"' not in body

        outage.redis.start()
        for server in both:
            back = await eventually(
                lambda s=server: short(s),
                lambda a, s=server: a.status_code == 200 and degraded(s) == 0,
                "limits not enforced again after Redis returned",
            )
            assert "x-ratelimit-remaining-requests" in back.headers
        assert "limit store reachable again" in outage.fail_open.output()
    assert "usage ledger cannot open its database" in outage.fail_open.output()


# --- reloading keys -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reloadable(emulator: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    config = gateway_config(
        emulator.url, admin={"key": ADMIN_KEY}, server={"graceful_shutdown_seconds": 3}
    )
    server = start_gateway(tmp_path_factory.mktemp("reload"), config)
    try:
        yield server
    finally:
        server.stop()


def generated_key() -> tuple[str, str]:
    """``gateway keys generate``: the key and the digest to configure."""
    printed = run_gateway_cli("keys", "generate").stdout
    secret = re.search(r"^key:\s+(\S+)$", printed, re.MULTILINE)
    digest = re.search(r"^key_sha256:\s+([0-9a-f]{64})$", printed, re.MULTILINE)
    assert secret and digest, printed
    return secret.group(1), digest.group(1)


def edit_keys(path: Path, keys: list[dict[str, Any]]) -> None:
    config = yaml.safe_load(path.read_text())
    config["keys"] = keys
    path.write_text(yaml.safe_dump(config))


def test_reload_takes_new_and_revoked_keys_while_a_stream_goes_on(
    reloadable: Server, emulator: Server
) -> None:
    gateway, path = reloadable, config_path(reloadable)
    secret, digest = generated_key()
    assert hashlib.sha256(secret.encode()).hexdigest() == digest
    original = yaml.safe_load(path.read_text())["keys"]
    alice = [k for k in original if k["name"] == "alice"]
    carol = {"name": "carol", "key_sha256": digest, "upstream_token": BOB_TOKEN}
    long = chat("a long story [[emulate:words 60]] [[emulate:wps 15]] [[emulate:queue 0]]")

    with httpx.Client(timeout=30) as http:

        def status(secret_key: str) -> int:
            answer = http.post(gateway.url + CHAT, json=chat(SHORT), headers=auth(secret_key))
            return answer.status_code

        with http.stream(
            "POST", gateway.url + CHAT, json={**long, "stream": True}, headers=auth(BOB_KEY)
        ) as stream:
            assert stream.status_code == 200
            job_id = stream.headers["x-job-id"]
            lines = stream.iter_lines()
            assert next(line for line in lines if line.startswith("data: "))

            edit_keys(path, [*alice, carol])  # bob revoked, carol added
            assert http.post(gateway.url + "/admin/reload").status_code == 401
            reloaded = http.post(gateway.url + "/admin/reload", headers=auth(ADMIN_KEY))
            reloaded_at = time.time()
            assert reloaded.status_code == 200, reloaded.text
            changes = reloaded.json()
            assert {k: changes[k] for k in ("reloaded", "keys", "added", "removed")} == {
                "reloaded": True,
                "keys": 2,
                "added": 1,
                "removed": 1,
            }
            assert status(secret) == 200
            assert status(BOB_KEY) == 401
            assert status(ALICE_KEY) == 200

            # A config that does not validate is refused; the keys in force stay.
            path.write_text(path.read_text().replace("upstream_token", "upstream_tokn", 1))
            broken = http.post(gateway.url + "/admin/reload", headers=auth(ADMIN_KEY))
            assert broken.status_code == 400 and error_code(broken) == "invalid_config"
            assert status(secret) == 200

            rest = list(lines)

        # The stream bob opened before the reload ran to its end, after the reload.
        payloads = [json.loads(line[6:]) for line in rest if line.startswith("data: {")]
        text = "".join(p["choices"][0]["delta"].get("content") or "" for p in payloads)
        assert "data: [DONE]" in rest
        assert payloads[-1]["choices"][0]["finish_reason"] == "stop"
        timeline = http.get(f"{emulator.url}/emulator/jobs/{job_id}/timeline").json()
        assert timeline["words"][-1]["at"] > reloaded_at
        assert text == reply_for(job_prompt(emulator, job_id))

        # SIGHUP re-reads the file too.
        dave = key("dave", "sk-test-dave-0123456789")
        edit_keys(path, [*alice, carol, dave])
        gateway.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while status(dave["key"]) != 200:
            assert time.monotonic() < deadline, "SIGHUP did not load the new key"
            time.sleep(0.1)
        assert status(secret) == 200
        assert gateway.process.poll() is None


# --- the per-account job cap --------------------------------------------------------------------


@pytest.fixture(scope="module")
def capped(emulator: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    config = gateway_config(emulator.url, server={"graceful_shutdown_seconds": 3})
    # (gateway_config's first parameter is named ``upstream``, so that section is set here)
    config["upstream"] = {**config["upstream"], "max_jobs_per_token": 2, "queue_size_per_token": 1}
    server = start_gateway(tmp_path_factory.mktemp("capped"), config)
    try:
        yield server
    finally:
        server.stop()


async def test_job_cap_runs_two_queues_one_and_refuses_the_fourth(
    capped: Server, emulator: Server
) -> None:
    finished: list[httpx.Response] = []
    async with httpx.AsyncClient(timeout=30) as http:

        async def one(i: int) -> httpx.Response:
            body = chat(f"capped {i} [[emulate:words 12]] [[emulate:wps 12]] [[emulate:queue 0]]")
            answer = await http.post(capped.url + CHAT, json=body, headers=auth(ALICE_KEY))
            finished.append(answer)
            return answer

        answers = await asyncio.gather(*(one(i) for i in range(4)))
        timelines = [
            (
                await http.get(f"{emulator.url}/emulator/jobs/{a.headers['x-job-id']}/timeline")
            ).json()
            for a in answers
            if a.status_code == 200
        ]
    refused = [a for a in answers if a.status_code == 429]
    assert sorted(a.status_code for a in answers) == [200, 200, 200, 429]
    assert finished[0] is refused[0]  # refused at once, not after a wait
    assert error_code(refused[0]) == "upstream_capacity"
    assert int(refused[0].headers["retry-after"]) >= 1
    assert "x-job-id" not in refused[0].headers
    # The third job was submitted only once one of the first two had ended.
    first, second, third = sorted(timelines, key=lambda t: t["created"])
    assert third["created"] >= min(first["words"][-1]["at"], second["words"][-1]["at"])
