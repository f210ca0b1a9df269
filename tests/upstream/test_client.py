"""The jobs-API client against respx: exact wire shapes, every failure typed."""

from __future__ import annotations

import json

import httpx
import pytest
import respx

from gateway.config import UpstreamSettings
from gateway.http.shapes import openai_body
from gateway.upstream.client import JobsClient
from gateway.upstream.errors import UpstreamFailure
from gateway.upstream.models import JobPhase

BASE = "https://upstream.test/remotejobs/v2"


def job(status: str = "running", log: str = "", vm: str = "running") -> dict[str, object]:
    return {
        "vmStatus": vm,
        "states": {
            "default": {
                "status": status,
                "outputFiles": [],
                "log": log,
                "commandLine": "{}",
                "app": "gridrepublic:text-inference",
            }
        },
        "created": "2024-05-06T21:26:00+00:00",
        "copy": 0,
        "tag": "gemma:2b",
        "runtime": 3,
    }


@pytest.fixture
async def client() -> JobsClient:
    settings = UpstreamSettings(base_url=BASE, submit_retries=2)
    c = JobsClient(settings, BASE)
    yield c  # type: ignore[misc]
    await c.aclose()


@respx.mock
async def test_submit_sends_the_documented_body(client: JobsClient) -> None:
    route = respx.post(f"{BASE}/jobs").respond(json={"success": True, "ids": ["a" * 32, "b" * 32]})
    ids = await client.submit("secret-token", "gemma:2b", ['hi "there"', "two"])
    assert ids == ["a" * 32, "b" * 32]
    request = route.calls.last.request
    assert request.headers["authorization"] == "Bearer secret-token"
    body = json.loads(request.content)
    assert body == {
        "app": "gridrepublic:text-inference",
        "tag": "gemma:2b",
        "commandLine": json.dumps({"inputs": ['hi "there"', "two"]}),
    }
    assert isinstance(body["commandLine"], str)


@respx.mock
async def test_submit_sends_hours_and_legacy_field_when_configured() -> None:
    settings = UpstreamSettings(base_url=BASE, hours=2, inputs_field="input")
    client = JobsClient(settings, BASE)
    route = respx.post(f"{BASE}/jobs").respond(json={"success": True, "ids": ["a" * 32]})
    await client.submit("t", "gemma:2b", ["x"])
    body = json.loads(route.calls.last.request.content)
    assert body["hours"] == 2
    assert json.loads(body["commandLine"]) == {"input": ["x"]}
    await client.aclose()


@respx.mock
async def test_success_false_keeps_the_upstream_message(client: JobsClient) -> None:
    respx.post(f"{BASE}/jobs").respond(json={"success": False, "error": "Invalid input format"})
    with pytest.raises(UpstreamFailure) as info:
        await client.submit("t", "gemma:2b", ["x"])
    assert info.value.kind == "rejected"
    assert "Invalid input format" in str(info.value.to_gateway_error())


@respx.mock
async def test_submit_is_not_retried_after_a_5xx(client: JobsClient) -> None:
    route = respx.post(f"{BASE}/jobs").respond(503, text="<html>busy</html>")
    with pytest.raises(UpstreamFailure) as info:
        await client.submit("t", "gemma:2b", ["x"])
    assert info.value.status_code == 503
    assert route.call_count == 1  # it may have created a job: never submit twice


@respx.mock
async def test_submit_is_retried_when_the_connection_was_refused(client: JobsClient) -> None:
    route = respx.post(f"{BASE}/jobs")
    route.side_effect = [
        httpx.ConnectError("refused"),
        httpx.Response(200, json={"success": True, "ids": ["c" * 32]}),
    ]
    assert await client.submit("t", "gemma:2b", ["x"]) == ["c" * 32]
    assert route.call_count == 2


@respx.mock
async def test_submit_with_wrong_id_count_is_a_bad_response(client: JobsClient) -> None:
    respx.post(f"{BASE}/jobs").respond(json={"success": True, "ids": ["a" * 32]})
    with pytest.raises(UpstreamFailure) as info:
        await client.submit("t", "gemma:2b", ["x", "y"])
    assert info.value.kind == "bad_response"


@respx.mock
async def test_status_takes_a_comma_separated_list(client: JobsClient) -> None:
    a, b = "a" * 32, "b" * 32
    route = respx.get(f"{BASE}/jobs/{a},{b}").respond(
        json={"success": True, "jobs": {a: job(log="Hello"), b: job("completed", "Bye", "stopped")}}
    )
    snapshots = await client.status("t", [a, b])
    assert route.called
    assert snapshots[a].phase is JobPhase.PENDING and snapshots[a].log == "Hello"
    assert snapshots[b].phase is JobPhase.FINISHED and snapshots[b].log == "Bye"


@respx.mock
async def test_status_ignores_ids_it_did_not_ask_for(client: JobsClient) -> None:
    a = "a" * 32
    respx.get(f"{BASE}/jobs/{a}").respond(
        json={"success": True, "jobs": {a: job(), "f" * 32: job()}}
    )
    assert list(await client.status("t", [a])) == [a]


@pytest.mark.parametrize(
    ("response", "kind"),
    [
        (httpx.Response(500, text="oops"), "http_error"),
        (httpx.Response(200, text="<html>not json"), "bad_response"),
        (httpx.Response(200, json=["a list"]), "bad_response"),
        (httpx.Response(200, json={"success": False, "error": "nope"}), "rejected"),
    ],
)
@respx.mock
async def test_status_failures_are_typed(
    client: JobsClient, response: httpx.Response, kind: str
) -> None:
    respx.get(f"{BASE}/jobs/{'a' * 32}").mock(return_value=response)
    with pytest.raises(UpstreamFailure) as info:
        await client.status("t", ["a" * 32])
    assert info.value.kind == kind


@respx.mock
async def test_timeouts_and_resets_are_typed(client: JobsClient) -> None:
    route = respx.get(f"{BASE}/jobs/{'a' * 32}")
    route.side_effect = httpx.ReadTimeout("slow")
    with pytest.raises(UpstreamFailure) as info:
        await client.status("t", ["a" * 32])
    assert info.value.kind == "timeout"
    route.side_effect = httpx.RemoteProtocolError("reset")
    with pytest.raises(UpstreamFailure) as info:
        await client.status("t", ["a" * 32])
    assert info.value.kind == "connect_error" and info.value.reached


@respx.mock
async def test_circuit_opens_after_consecutive_failures_and_fails_fast() -> None:
    settings = UpstreamSettings(
        base_url=BASE, circuit_breaker={"failure_threshold": 2, "reset_seconds": 60}
    )
    client = JobsClient(settings, BASE)
    route = respx.get(f"{BASE}/jobs/{'a' * 32}").respond(502)
    for _ in range(2):
        with pytest.raises(UpstreamFailure):
            await client.status("t", ["a" * 32])
    with pytest.raises(UpstreamFailure) as info:
        await client.status("t", ["a" * 32])
    assert info.value.kind == "circuit_open"
    assert route.call_count == 2  # the third call never left
    assert info.value.to_gateway_error().status_code == 503
    # another account is unaffected
    with pytest.raises(UpstreamFailure) as other:
        await client.status("other-token", ["a" * 32])
    assert other.value.kind == "http_error"
    await client.aclose()


def test_token_never_in_failure_messages() -> None:
    failure = UpstreamFailure(
        "http_error", "the upstream service answered HTTP 500", status_code=500
    )
    assert "secret" not in json.dumps(openai_body(failure.to_gateway_error()))
