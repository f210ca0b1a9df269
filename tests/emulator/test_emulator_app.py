"""The emulator over HTTP, in-process through httpx.ASGITransport."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gateway.emulator.app import EmulatedConnectionReset, create_emulator_app
from gateway.emulator.directives import reply_for
from gateway.emulator.engine import EmulatorConfig, Engine

APP = "gridrepublic:text-inference"
WALL = 1_700_000_000.0
TOKEN_A, TOKEN_B = "token-a", "token-b"


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def engine(clock: Clock) -> Engine:
    config = EmulatorConfig(
        tokens=frozenset({TOKEN_A, TOKEN_B}), queue_seconds=1.0, words_per_second=10.0
    )
    return Engine(config, clock=clock, wall_clock=lambda: WALL)


@pytest.fixture
async def client(engine: Engine) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_emulator_app(engine.config, engine))
    async with httpx.AsyncClient(transport=transport, base_url="http://emulator") as client:
        yield client


def auth(token: str = TOKEN_A) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def body(*prompts: str, tag: str = "gemma:2b", field: str = "inputs") -> dict[str, Any]:
    return {"app": APP, "tag": tag, "commandLine": json.dumps({field: list(prompts)})}


async def submit(client: httpx.AsyncClient, *prompts: str, token: str = TOKEN_A) -> list[str]:
    response = await client.post("/jobs", json=body(*prompts), headers=auth(token))
    assert response.status_code == 200
    data = response.json()
    assert data["success"] is True
    ids = data["ids"]
    assert isinstance(ids, list)
    return ids


async def jobs(client: httpx.AsyncClient, *ids: str, token: str = TOKEN_A) -> dict[str, Any]:
    response = await client.get(f"/jobs/{','.join(ids)}", headers=auth(token))
    assert response.status_code == 200
    data = response.json()
    assert data["success"] is True and set(data) == {"success", "jobs"}
    result = data["jobs"]
    assert isinstance(result, dict)
    return result


async def test_submit_shape(client: httpx.AsyncClient) -> None:
    response = await client.post("/jobs", json=body("a", "b", "c"), headers=auth())
    assert response.headers["content-type"] == "application/json"
    data = response.json()
    assert set(data) == {"success", "ids"} and data["success"] is True
    assert len(data["ids"]) == 3 and len(set(data["ids"])) == 3
    assert all(re.fullmatch(r"[0-9a-f]{32}", job_id) for job_id in data["ids"])


async def test_status_shape_matches_the_documentation(
    client: httpx.AsyncClient, clock: Clock
) -> None:
    prompt = 'How can "1+1" = 10?'
    (job_id,) = await submit(client, prompt)
    clock.now += 1.25
    job = (await jobs(client, job_id))[job_id]
    reply_words = reply_for(prompt).split(" ")
    assert job == {
        "vmStatus": "running",
        "states": {
            "default": {
                "status": "running",
                "outputFiles": [],
                "log": " ".join(reply_words[:3]),
                "commandLine": json.dumps({"inputs": [prompt]}, separators=(",", ":")),
                "app": APP,
            }
        },
        "created": "2023-11-14T22:13:20+00:00",
        "copy": 0,
        "tag": "gemma:2b",
        "runtime": 0,
    }


async def test_both_path_prefixes_and_older_input_field(
    client: httpx.AsyncClient, clock: Clock
) -> None:
    payload = {**body("[[emulate:reply old]]", field="input"), "hours": 1}
    response = await client.post("/remotejobs/v2/jobs", json=payload, headers=auth())
    (job_id,) = response.json()["ids"]
    clock.now += 10
    response = await client.get(f"/remotejobs/v2/jobs/{job_id}", headers=auth())
    assert response.json()["jobs"][job_id]["states"]["default"]["log"] == "old"


async def test_multiple_ids_unknown_and_foreign_absent(
    client: httpx.AsyncClient, clock: Clock
) -> None:
    first, second = await submit(client, "one", "two")
    (foreign,) = await submit(client, "three", token=TOKEN_B)
    clock.now += 100
    answer = await jobs(client, first, "f" * 32, second, foreign, "")
    assert set(answer) == {first, second}
    assert answer[first]["states"]["default"]["log"] == reply_for("one")
    assert answer[second]["states"]["default"]["log"] == reply_for("two")
    assert set(await jobs(client, first, foreign, token=TOKEN_B)) == {foreign}
    assert await jobs(client, "0" * 32) == {}


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer "}, auth("token-c")],
)
async def test_auth_is_required(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    for response in (
        await client.post("/jobs", json=body("x"), headers=headers),
        await client.get("/jobs/" + "a" * 32, headers=headers),
    ):
        assert response.status_code == 401
        data = response.json()
        assert data["success"] is False and isinstance(data["error"], str)
        assert "token-c" not in response.text


async def test_any_token_accepted_without_a_token_list() -> None:
    app = create_emulator_app(EmulatorConfig())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://e") as client:
        response = await client.post("/jobs", json=body("x"), headers=auth("whatever"))
        assert response.json()["success"] is True
        response = await client.post("/jobs", json=body("x"))
        assert response.status_code == 401


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[1, 2]",
        b"\xff\xfe",
        json.dumps({"tag": "m", "commandLine": '{"inputs": ["x"]}'}).encode(),
        json.dumps({**body("x"), "app": "other:app"}).encode(),
        json.dumps({**body("x"), "tag": 3}).encode(),
        json.dumps({**body("x"), "tag": ""}).encode(),
        json.dumps({**body("x"), "commandLine": {"inputs": ["x"]}}).encode(),
        json.dumps({**body("x"), "commandLine": "not json"}).encode(),
        json.dumps({**body("x"), "commandLine": '["x"]'}).encode(),
        json.dumps({**body("x"), "commandLine": '{"inputs": "x"}'}).encode(),
        json.dumps({**body("x"), "commandLine": '{"inputs": []}'}).encode(),
        json.dumps({**body("x"), "commandLine": '{"inputs": ["x", 1]}'}).encode(),
        json.dumps({**body("x"), "commandLine": '{"prompts": ["x"]}'}).encode(),
        json.dumps({**body("x"), "hours": "one"}).encode(),
    ],
)
async def test_invalid_input_format(
    client: httpx.AsyncClient, engine: Engine, payload: bytes
) -> None:
    response = await client.post("/jobs", content=payload, headers=auth())
    assert response.status_code == 200
    assert response.json() == {"success": False, "error": "Invalid input format"}
    assert len(engine) == 0


async def test_directives_over_http(client: httpx.AsyncClient, clock: Clock) -> None:
    prompts = [
        "[[emulate:reply Exactly this.]]",
        "[[emulate:words 3]]",
        "[[emulate:fail boom]]",
        "[[emulate:hang]]",
        "[[emulate:vanish]]",
        "[[emulate:status weird]][[emulate:words 2]]",
        "[[emulate:ansi]][[emulate:words 4]]",
        '[[emulate:tool lookup {"q": "x"}]]',
        '[[emulate:json {"n": 1}]]',
    ]
    ids = await submit(client, *prompts)
    clock.now += 60
    answer = await jobs(client, *ids)
    states = {prompt: answer.get(job_id) for prompt, job_id in zip(prompts, ids, strict=True)}

    def get(prompt: str, key: str) -> Any:
        job = states[prompt]
        assert job is not None
        return job["states"]["default"][key]

    assert get(prompts[0], "log") == "Exactly this."
    assert len(get(prompts[1], "log").split()) == 3
    assert get(prompts[2], "status") == "failed" and get(prompts[2], "log").endswith("\nboom")
    assert get(prompts[3], "status") == "running"
    assert states[prompts[4]] is None
    assert get(prompts[5], "status") == "weird"
    assert "\x1b[32m" in get(prompts[6], "log")
    tool_log = get(prompts[7], "log")
    assert tool_log == '<tool_call>{"name": "lookup", "arguments": {"q": "x"}}</tool_call>'
    assert json.loads(get(prompts[8], "log")) == {"n": 1}


async def test_json_invalid_first_over_http(client: httpx.AsyncClient, clock: Clock) -> None:
    prompt = '[[emulate:json {"n": 1} invalid_first=1]]'
    (first,) = await submit(client, prompt)
    (second,) = await submit(client, prompt)
    clock.now += 60
    answer = await jobs(client, first, second)
    with pytest.raises(json.JSONDecodeError):
        json.loads(answer[first]["states"]["default"]["log"])
    assert json.loads(answer[second]["states"]["default"]["log"]) == {"n": 1}


async def add_faults(client: httpx.AsyncClient, faults: dict[str, Any]) -> None:
    response = await client.post("/emulator/faults", json=faults)
    assert response.status_code == 200, response.text


async def test_http_faults(client: httpx.AsyncClient, engine: Engine) -> None:
    await add_faults(
        client,
        {
            "submit": [{"http": 503}, {"http": 429, "retry_after": 1}, {"http": 500, "body": "x"}],
        },
    )
    response = await client.post("/jobs", json=body("a"), headers=auth())
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("text/html") and "503" in response.text
    response = await client.post("/jobs", json=body("a"), headers=auth())
    assert response.status_code == 429 and response.headers["retry-after"] == "1"
    response = await client.post("/jobs", json=body("a"), headers=auth())
    assert (response.status_code, response.text) == (500, "x")
    assert len(engine) == 0
    assert len(await submit(client, "a")) == 1
    assert engine.snapshot()["faults_injected"] == 3


async def test_body_faults(client: httpx.AsyncClient) -> None:
    (job_id,) = await submit(client, "a")
    await add_faults(
        client,
        {
            "submit": [{"not_json": True}, {"success_false": "Quota exceeded"}],
            "status": [{"missing": True}, {"not_json": True}],
        },
    )
    response = await client.post("/jobs", json=body("a"), headers=auth())
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()
    response = await client.post("/jobs", json=body("a"), headers=auth())
    assert response.json() == {"success": False, "error": "Quota exceeded"}
    assert await jobs(client, job_id) == {}
    response = await client.get(f"/jobs/{job_id}", headers=auth())
    with pytest.raises(json.JSONDecodeError):
        response.json()
    assert job_id in await jobs(client, job_id)


async def test_delay_fault_then_normal_answer(client: httpx.AsyncClient, engine: Engine) -> None:
    await add_faults(client, {"submit": [{"delay": 0.01}]})
    assert len(await submit(client, "a")) == 1
    assert engine.snapshot()["faults_injected"] == 1


async def test_delay_combines_with_an_effect(client: httpx.AsyncClient) -> None:
    await add_faults(client, {"status": [{"delay": 0.01, "http": 502}]})
    response = await client.get("/jobs/abc", headers=auth())
    assert response.status_code == 502


async def test_reset_fault_in_process(client: httpx.AsyncClient) -> None:
    await add_faults(client, {"status": [{"reset": True}]})
    with pytest.raises(httpx.RemoteProtocolError) as caught:
        await client.get("/jobs/abc", headers=auth())
    assert isinstance(caught.value, EmulatedConnectionReset)
    assert await jobs(client, "abc") == {}


async def test_repeat_fault_until_cleared(client: httpx.AsyncClient) -> None:
    await add_faults(client, {"status": [{"http": 503, "repeat": True}]})
    for _ in range(3):
        assert (await client.get("/jobs/abc", headers=auth())).status_code == 503
    pending = (await client.get("/emulator/faults")).json()["pending"]
    assert pending == {"submit": [], "status": [{"http": 503, "repeat": True}]}
    assert (await client.delete("/emulator/faults")).json()["pending"]["status"] == []
    assert await jobs(client, "abc") == {}


async def test_faults_are_consumed_per_kind_in_order(client: httpx.AsyncClient) -> None:
    await add_faults(client, {"status": [{"http": 500}, {"http": 502}]})
    await add_faults(client, {"status": [{"http": 504}]})
    await submit(client, "not affected")
    codes = [(await client.get("/jobs/x", headers=auth())).status_code for _ in range(4)]
    assert codes == [500, 502, 504, 200]


@pytest.mark.parametrize(
    "payload", [b"nope", b'{"submit": [{"teapot": 1}]}', b'{"submit": [{"missing": true}]}']
)
async def test_invalid_faults_are_400(client: httpx.AsyncClient, payload: bytes) -> None:
    response = await client.post("/emulator/faults", content=payload)
    assert response.status_code == 400 and response.json()["success"] is False
    assert (await client.get("/emulator/faults")).json()["pending"] == {"submit": [], "status": []}


def short_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:12]


async def test_stats(client: httpx.AsyncClient) -> None:
    ids = await submit(client, "a", "b")
    (other,) = await submit(client, "c", token=TOKEN_B)
    await jobs(client, *ids)
    await jobs(client, ids[0])
    await jobs(client, other, token=TOKEN_B)
    stats = (await client.get("/emulator/stats")).json()
    assert stats["submit_requests"] == 2 and stats["status_requests"] == 3
    assert stats["jobs_created"] == 3 and stats["jobs_active"] == 3
    assert stats["status_ids_total"] == 4 and stats["max_ids_per_status"] == 2
    assert stats["recent_ids_per_status"] == [2, 1, 1]
    assert stats["tokens_seen"] == 2
    assert stats["status_requests_by_token"] == {short_hash(TOKEN_A): 2, short_hash(TOKEN_B): 1}
    assert TOKEN_A not in json.dumps(stats) and TOKEN_B not in json.dumps(stats)
    reset = (await client.post("/emulator/stats/reset")).json()
    assert reset["status_requests"] == 0 and reset["tokens_seen"] == 0
    assert reset["jobs_active"] == 3


async def test_timeline_endpoint(client: httpx.AsyncClient) -> None:
    prompt = "User: hi [[emulate:words 3]]\nAssistant:"
    (job_id,) = await submit(client, prompt)
    data = (await client.get(f"/emulator/jobs/{job_id}/timeline")).json()
    assert data["id"] == job_id and data["prompt"] == prompt
    assert data["words"] == [{"index": i, "at": WALL + 1.0 + i / 10} for i in range(3)]
    missing = await client.get("/emulator/jobs/nope/timeline")
    assert missing.status_code == 404


async def test_health(client: httpx.AsyncClient) -> None:
    await submit(client, "a")
    assert (await client.get("/emulator/health")).json() == {"success": True, "jobs": 1}


async def test_non_ascii_and_lone_surrogate_prompts(
    client: httpx.AsyncClient, clock: Clock
) -> None:
    prompts = ["héllo ✓ [[emulate:reply ünïcode ✓]]", "broken \ud800 surrogate"]
    payload = {"app": APP, "tag": "m", "commandLine": json.dumps({"inputs": prompts})}
    response = await client.post("/jobs", json=payload, headers=auth())
    ids = response.json()["ids"]
    clock.now += 60
    answer = await jobs(client, *ids)
    assert answer[ids[0]]["states"]["default"]["log"] == "ünïcode ✓"
    assert answer[ids[1]]["states"]["default"]["log"] == reply_for(prompts[1])
