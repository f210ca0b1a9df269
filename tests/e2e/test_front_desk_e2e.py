"""End to end: every request goes through the one front desk (issue 22, items 1-5).

Each test re-runs one hole an attacker review found, as a user with a key, against a real
gateway and emulator on loopback: background runs that skipped the team's limits, requests
charged only their prompt when their deadline or a cancel cut them, tails and token counts
that were never admitted, accounts sharing jobs and cache entries, and tool schemas checked
on the event loop.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.servers import (
    ALICE_KEY,
    ALICE_TOKEN,
    BOB_KEY,
    BOB_TOKEN,
    Server,
    gateway_config,
    start_gateway,
)

ADMIN_KEY = "sk-test-desk-admin-0123456789"
NARROW_KEY = "sk-test-desk-narrow-0123456789"
PAIR_KEY = "sk-test-desk-pair-0123456789"
COUNTER_KEY = "sk-test-desk-counter-0123456789"
COUNTER2_KEY = "sk-test-desk-counter2-0123456789"
ESTIMATE = 256  # limits.completion_estimate: completion tokens assumed at admission
LONG = "[[emulate:words 400]] [[emulate:wps 8]] Tell me a long story."
CHAT = "/v1/chat/completions"


def desk_config(emulator: Server, tmp: Path) -> dict[str, Any]:
    return gateway_config(
        emulator.url,
        accounts=[
            {"name": "team-a", "upstream_token": ALICE_TOKEN},
            {"name": "team-b", "upstream_token": BOB_TOKEN},
        ],
        keys=[
            {"name": "alice", "key": ALICE_KEY, "account": "team-a"},
            {"name": "bob", "key": BOB_KEY, "account": "team-b"},
            {"name": "narrow", "key": NARROW_KEY, "account": "team-a", "models": ["llama2"]},
            {"name": "pair", "key": PAIR_KEY, "account": "team-a", "max_concurrent": 2},
            {"name": "counter", "key": COUNTER_KEY, "account": "team-a", "rpm": 2},
            {"name": "counter2", "key": COUNTER2_KEY, "account": "team-a", "rpm": 2},
        ],
        models=[
            {"name": "gemma-2b", "tag": "gemma:2b", "cache": True},
            {"name": "llama2", "tag": "llama2-uncensored", "template": "llama2"},
        ],
        admin={"keys": [{"name": "ops", "key": ADMIN_KEY, "role": "admin"}]},
        ledger={"url": f"sqlite:///{tmp / 'ledger.db'}"},
        responses={"background_lease_seconds": 1},
        key_store={"poll_seconds": 0.2},
        limits={"keepalive_interval": 1.0, "default_deadline": 30, "max_body_bytes": 4 << 20},
    )


@pytest.fixture(scope="module")
def server(emulator: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("desk")
    gateway = start_gateway(tmp, desk_config(emulator, tmp))
    try:
        yield gateway
    finally:
        gateway.stop()


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def access_lines(server: Server, match: Any, count: int = 1, limit: float = 15) -> list[Any]:
    """The gateway's access lines for which ``match(line)``, once there are ``count``."""
    deadline = time.monotonic() + limit
    while True:
        lines = []
        for raw in server.output().splitlines():
            with contextlib.suppress(ValueError):
                line = json.loads(raw)
                if line.get("logger") == "gateway.access" and match(line):
                    lines.append(line)
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.1)


def by_request(request_id: str) -> Any:
    return lambda line: line.get("request_id") == request_id


def new_key(server: Server, name: str, **fields: Any) -> str:
    made = httpx.post(
        server.url + "/admin/keys",
        json={"name": name, "account": "team-a", **fields},
        headers=auth(ADMIN_KEY),
        timeout=30,
    )
    assert made.status_code == 201, made.text
    secret: str = made.json()["secret"]
    deadline = time.monotonic() + 10
    while httpx.get(server.url + "/v1/models", headers=auth(secret)).status_code != 200:
        assert time.monotonic() < deadline, "the new key never worked"
        time.sleep(0.1)
    return secret


# ----------------------------------------------------------------- item 1: one way in


def test_a_keys_model_listings_show_only_what_its_team_lets_it_use(server: Server) -> None:
    """Every door lists the models as the desk admits them: the team's list narrows the key's."""
    team = httpx.post(
        server.url + "/admin/teams",
        json={"name": "llama-listing", "models": ["llama2"]},
        headers=auth(ADMIN_KEY),
    )
    assert team.status_code == 201, team.text
    secret = new_key(server, "listed", team="llama-listing")
    openai_ids = [
        m["id"] for m in httpx.get(server.url + "/v1/models", headers=auth(secret)).json()["data"]
    ]
    assert "gemma-2b" not in openai_ids and any("llama2" in i for i in openai_ids), openai_ids
    anthropic = httpx.get(
        server.url + "/v1/models",
        headers={**auth(secret), "anthropic-version": "2023-06-01"},
    ).json()
    assert all("gemma" not in m["id"] for m in anthropic["data"]), anthropic
    tags = httpx.get(server.url + "/api/tags", headers=auth(secret)).json()["models"]
    assert tags and all("gemma" not in m["name"] for m in tags), tags
    assert httpx.get(server.url + "/v1/models/gemma-2b", headers=auth(secret)).status_code == 404


def test_a_background_response_obeys_the_teams_model_list(server: Server) -> None:
    team = httpx.post(
        server.url + "/admin/teams",
        json={"name": "llama-only", "models": ["llama2"]},
        headers=auth(ADMIN_KEY),
    )
    assert team.status_code == 201, team.text
    secret = new_key(server, "teamed", team="llama-only")
    body = {"model": "gemma-2b", "input": "hello", "background": True}
    answer = httpx.post(server.url + "/v1/responses", json=body, headers=auth(secret))
    assert answer.status_code == 404, answer.text  # was 200 "queued": the team was skipped
    foreground = httpx.post(
        server.url + "/v1/responses", json={**body, "background": False}, headers=auth(secret)
    )
    assert foreground.status_code == 404, foreground.text
    allowed = httpx.post(
        server.url + "/v1/responses", json={**body, "model": "llama2"}, headers=auth(secret)
    )
    assert allowed.status_code == 200, allowed.text


def test_responses_routes_answer_404_for_a_model_the_key_may_not_use(server: Server) -> None:
    body = {"model": "gemma-2b", "input": "hello"}
    created = httpx.post(server.url + "/v1/responses", json=body, headers=auth(NARROW_KEY))
    assert created.status_code == 404, created.text  # was 403
    assert created.json()["error"]["code"] == "model_not_found"
    counted = httpx.post(
        server.url + "/v1/responses/input_tokens", json=body, headers=auth(NARROW_KEY)
    )
    assert counted.status_code == 404, counted.text  # was 200
    unknown = httpx.post(
        server.url + "/v1/responses", json={**body, "model": "nope"}, headers=auth(NARROW_KEY)
    )
    assert unknown.status_code == 404


# ----------------------------------------------------------------- item 2: charged for what ran


def test_a_request_cut_by_its_own_deadline_is_charged_its_estimate(server: Server) -> None:
    body = {"model": "llama2", "messages": [{"role": "user", "content": "deadline " + LONG}]}
    answer = httpx.post(
        server.url + CHAT,
        json=body,
        headers={**auth(ALICE_KEY), "x-request-timeout": "2"},
        timeout=30,
    )
    assert answer.status_code == 504, answer.text
    (line,) = access_lines(server, by_request(answer.headers["x-request-id"]))
    assert line["status"] == 504
    # The job runs on upstream (no cancel): charged at least the estimate, not the prompt only.
    assert line["completion_tokens"] >= ESTIMATE, line


def test_a_cancelled_background_run_is_charged_its_estimate(server: Server) -> None:
    body = {"model": "llama2", "input": "cancel " + LONG, "background": True}
    made = httpx.post(server.url + "/v1/responses", json=body, headers=auth(ALICE_KEY))
    assert made.status_code == 200, made.text
    rid = made.json()["id"]
    deadline = time.monotonic() + 15
    while True:  # some text first: the job is running
        got = httpx.get(server.url + f"/v1/responses/{rid}", headers=auth(ALICE_KEY)).json()
        if got["output"] or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    cancelled = httpx.post(server.url + f"/v1/responses/{rid}/cancel", headers=auth(ALICE_KEY))
    assert cancelled.json()["status"] == "cancelled"
    (line,) = access_lines(server, by_request(made.headers["x-request-id"]))
    assert line["outcome"] == "cancelled", line
    assert line["completion_tokens"] >= ESTIMATE, line  # was the prompt only


# ----------------------------------------------------------------- item 3: nothing blocks


def _healthz_while(server: Server, work: threading.Thread) -> list[float]:
    latencies: list[float] = []
    with httpx.Client(base_url=server.url, timeout=30) as http:
        while work.is_alive() or len(latencies) < 20:
            start = time.perf_counter()
            assert http.get("/healthz").status_code == 200
            latencies.append(time.perf_counter() - start)
    return latencies


def _tools(count: int, properties: int) -> list[dict[str, Any]]:
    schema = {
        "type": "object",
        "properties": {f"p{i}": {"type": "string"} for i in range(properties)},
    }
    return [
        {"type": "function", "function": {"name": f"f{n}", "parameters": schema}}
        for n in range(count)
    ]


@pytest.mark.parametrize(
    ("tools", "properties"),
    [(12, 200), (25, 200), (187, 200)],
    ids=["67KB", "140KB", "1MiB"],
)
def test_large_tool_schemas_do_not_delay_healthz(
    server: Server, tools: int, properties: int
) -> None:
    body = {
        "model": "gemma-2b",
        "messages": [{"role": "user", "content": "[[emulate:reply ok]]"}],
        "tools": _tools(tools, properties),
    }
    outcome: list[httpx.Response] = []
    work = threading.Thread(
        target=lambda: outcome.append(
            httpx.post(server.url + CHAT, json=body, headers=auth(ALICE_KEY), timeout=60)
        )
    )
    with httpx.Client(base_url=server.url, timeout=30) as http:
        baseline = []
        for _ in range(20):
            start = time.perf_counter()
            http.get("/healthz")
            baseline.append(time.perf_counter() - start)
    work.start()
    latencies = _healthz_while(server, work)
    work.join()
    size = len(json.dumps(body))
    usual = statistics.median(baseline)
    print(  # the figures, for the report (pytest -s)
        f"\n{size} bytes of tools -> {outcome[0].status_code}; /healthz: baseline median "
        f"{usual * 1000:.1f} ms, during: median {statistics.median(latencies) * 1000:.1f} ms, "
        f"max {max(latencies) * 1000:.1f} ms over {len(latencies)} probes"
    )
    assert outcome[0].status_code in (200, 400), outcome[0].text
    # A loop held by the schema checks made one probe wait for all of them: 4.8 s for 140 KB
    # before. Probes stay within 50 ms of the usual (the slowest measured ~15 ms here); the
    # bound on the slowest one is looser, 0.5 s, since a loaded machine (two cores for eight
    # test runs) pauses a process now and then; a stalled loop still fails it by seconds.
    assert statistics.median(latencies) - usual < 0.05, sorted(latencies)[-5:]
    assert max(latencies) - usual < 0.5, sorted(latencies)[-5:]


def test_a_request_over_the_schema_budget_is_a_clear_400(server: Server) -> None:
    body = {
        "model": "gemma-2b",
        "messages": [{"role": "user", "content": "hi"}],
        "tools": _tools(187, 200),
    }
    answer = httpx.post(server.url + CHAT, json=body, headers=auth(ALICE_KEY), timeout=60)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "schemas_too_large" and error["param"] == "tools"
    assert "10000" in error["message"]
    counted = httpx.post(
        server.url + "/v1/messages/count_tokens",
        json={
            **body,
            "tools": [
                {
                    "name": f"t{i}",
                    "input_schema": {
                        "type": "object",
                        "properties": {f"p{j}": {"type": "string"} for j in range(200)},
                    },
                }
                for i in range(60)
            ],
        },
        headers={**auth(ALICE_KEY), "anthropic-version": "2023-06-01"},
    )
    assert counted.status_code == 400, counted.text
    assert counted.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("path", "key", "body", "headers"),
    [
        ("/v1/messages/count_tokens", COUNTER_KEY,
         {"messages": [{"role": "user", "content": "hi"}]}, {"anthropic-version": "2023-06-01"}),
        ("/v1/responses/input_tokens", COUNTER2_KEY, {"input": "hi"}, {}),
    ],
    ids=["count_tokens", "input_tokens"],
)  # fmt: skip
def test_token_counts_are_admitted_and_rate_limited(
    server: Server, path: str, key: str, body: dict[str, Any], headers: dict[str, str]
) -> None:
    statuses = []
    for _ in range(3):
        answer = httpx.post(
            server.url + path, json={"model": "gemma-2b", **body}, headers={**auth(key), **headers}
        )
        statuses.append(answer.status_code)
    assert statuses == [200, 200, 429], statuses  # each counts as one request (rpm 2)
    assert answer.headers.get("retry-after") or answer.headers.get("retry-after-ms")


# ----------------------------------------------------------------- item 4: accounts never mix


def test_a_cached_answer_is_not_revealed_to_another_account(server: Server) -> None:
    body = {"model": "gemma-2b", "messages": [{"role": "user", "content": "secret plan 42"}]}
    first = httpx.post(server.url + CHAT, json=body, headers=auth(ALICE_KEY), timeout=30)
    assert first.headers["x-gateway-cache"] == "miss"
    again = httpx.post(server.url + CHAT, json=body, headers=auth(ALICE_KEY), timeout=30)
    assert again.headers["x-gateway-cache"] == "hit"  # the same account reads it
    probe = httpx.post(
        server.url + CHAT,
        json=body,
        headers={**auth(BOB_KEY), "cache-control": "no-store"},
        timeout=30,
    )
    assert probe.headers["x-gateway-cache"] == "miss", "another account saw the entry"


def test_identical_requests_of_two_accounts_do_not_share_a_job(server: Server) -> None:
    body = {
        "model": "gemma-2b",
        "messages": [{"role": "user", "content": "[[emulate:wps 10]] [[emulate:words 20]] joint"}],
    }
    answers: dict[str, httpx.Response] = {}

    def ask(name: str, key: str) -> None:
        answers[name] = httpx.post(server.url + CHAT, json=body, headers=auth(key), timeout=60)

    threads = [threading.Thread(target=ask, args=a) for a in (("a", ALICE_KEY), ("b", BOB_KEY))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers["a"].status_code == answers["b"].status_code == 200
    assert answers["a"].headers["x-job-id"] != answers["b"].headers["x-job-id"]


# ----------------------------------------------------------------- item 5: tails admitted


def test_a_tail_counts_as_a_concurrent_request_of_its_key(server: Server) -> None:
    body = {"model": "llama2", "input": "tails " + LONG, "background": True}
    made = httpx.post(server.url + "/v1/responses", json=body, headers=auth(PAIR_KEY))
    assert made.status_code == 200, made.text
    url = server.url + f"/v1/responses/{made.json()['id']}?stream=true"
    with httpx.Client(timeout=30) as http, http.stream("GET", url, headers=auth(PAIR_KEY)) as tail:
        assert tail.status_code == 200  # the run and this tail: 2 of 2
        second = http.get(url, headers=auth(PAIR_KEY))
        assert second.status_code == 429, second.status_code  # was 200, for any number
    httpx.post(url.split("?")[0] + "/cancel", headers=auth(PAIR_KEY))


def test_a_queued_background_run_sends_keepalives(server: Server) -> None:
    body = {
        "model": "llama2",
        "input": "[[emulate:queue 3]] [[emulate:reply done]]",
        "background": True,
        "stream": True,
    }
    seen: list[str] = []
    started = time.monotonic()
    with (
        httpx.Client(timeout=httpx.Timeout(30, read=2.5)) as http,
        http.stream("POST", server.url + "/v1/responses", json=body, headers=auth(ALICE_KEY))
        as answer,
    ):  # fmt: skip
        assert answer.status_code == 200
        for line in answer.iter_lines():
            seen.append(line)
            if "response.completed" in line:
                break
    assert any(line.startswith(":") for line in seen), seen  # pings while it was queued
    assert time.monotonic() - started >= 3


def test_a_database_key_can_opt_out_of_the_cache(server: Server) -> None:
    secret = new_key(server, "no-cache", cache=False)  # was a 400: "cache" was not a field
    shown = httpx.get(server.url + "/admin/keys/no-cache", headers=auth(ADMIN_KEY)).json()
    assert shown["cache"] is False
    body = {"model": "gemma-2b", "messages": [{"role": "user", "content": "opted out 7"}]}
    for _ in range(2):
        answer = httpx.post(server.url + CHAT, json=body, headers=auth(secret), timeout=30)
        assert answer.headers["x-gateway-cache"] == "bypass"


REPLY = " ".join(f"word{i}" for i in range(30))


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["killed", "stopped"])
def test_a_database_keys_background_run_resumes_and_is_charged_once(
    emulator: Server, tmp_path: Path, sig: signal.Signals
) -> None:
    config = desk_config(emulator, tmp_path)  # one SQLite file: keys, responses, ledger
    first = start_gateway(tmp_path, config)
    try:
        secret = new_key(first, "resumer")
        body = {
            "model": "llama2",
            "input": f"[[emulate:wps 10]] [[emulate:reply {REPLY}]]",
            "background": True,
        }
        made = httpx.post(first.url + "/v1/responses", json=body, headers=auth(secret))
        assert made.status_code == 200, made.text
        rid = made.json()["id"]
        url = f"/v1/responses/{rid}"
        deadline = time.monotonic() + 20
        while not httpx.get(first.url + url, headers=auth(secret)).json()["output"]:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        first.stop(sig)
    second = start_gateway(tmp_path, config)
    try:
        deadline = time.monotonic() + 30
        while True:
            done = httpx.get(second.url + url, headers=auth(secret)).json()
            if done["status"] in ("completed", "failed") or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        # Was "failed": "The key that created this response no longer exists."
        assert done["status"] == "completed", done
        text = done["output"][0]["content"][0]["text"]
        assert text == REPLY
        usage = done["usage"]
        # Followed under the request id that created it: one request, across both gateways.
        request_id = made.headers["x-request-id"]
        (line,) = access_lines(second, by_request(request_id))
        assert line["key"] == "resumer" and line["outcome"] == "ok"
        assert line["completion_tokens"] == usage["output_tokens"] > 0
        assert line["prompt_tokens"] == usage["input_tokens"] > 0
        before = access_lines(first, by_request(request_id), limit=0)
        if sig == signal.SIGTERM:  # handed over: its line carries no tokens (charged once)
            assert [(r["outcome"], r["completion_tokens"]) for r in before] == [
                ("handed_over", 0)
            ], before
        else:
            assert before == []
    finally:
        second.stop()
    # Charged once in the ledger: the resumed run's row replaced the first gateway's (its
    # in-flight row when killed; its hand-over row when stopped). It was charged twice when
    # the resumed run had a request id of its own.
    with sqlite3.connect(tmp_path / "ledger.db") as db:
        rows = db.execute(
            "SELECT outcome, prompt_tokens, completion_tokens FROM gateway_usage "
            "WHERE key_name = 'resumer'"
        ).fetchall()
    assert rows == [("ok", usage["input_tokens"], usage["output_tokens"])], rows
