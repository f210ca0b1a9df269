"""What the upstream answers is untrusted: job ids checked, error text masked (issue 12)."""

from __future__ import annotations

import pytest
import respx

from gateway.config import UpstreamSettings
from gateway.upstream.client import JobsClient
from gateway.upstream.errors import UpstreamFailure

BASE = "https://upstream.test/remotejobs/v2"


@pytest.mark.parametrize(
    "bad",
    ["../../x?y#", "a\r\nb", ".", "..", "a,b", "a/b", "a b", "x" * 129, "", "%2e%2e", "é"],
)
@respx.mock
async def test_a_malformed_job_id_is_an_upstream_error_and_never_polled(bad: str) -> None:
    submit = respx.post(f"{BASE}/jobs").respond(json={"success": True, "ids": [bad]})
    anything_else = respx.route().respond(500)
    client = JobsClient(UpstreamSettings(base_url=BASE), BASE)
    try:
        with pytest.raises(UpstreamFailure) as info:
            await client.submit("tok", "gemma:2b", ["hi"])
    finally:
        await client.aclose()
    assert info.value.kind == "bad_response"
    assert info.value.to_gateway_error().status_code == 502
    assert bad not in info.value.message or not bad
    assert submit.call_count == 1 and anything_else.call_count == 0


@pytest.mark.parametrize(
    "good",
    ["a9ab011455bb6aeb0161b5fc08766b42", "3f1c2a4e-9b7d-4c1e-8f00-1234abcd5678", "job:42.x_1"],
)
@respx.mock
async def test_the_services_id_shapes_pass(good: str) -> None:
    respx.post(f"{BASE}/jobs").respond(json={"success": True, "ids": [good]})
    client = JobsClient(UpstreamSettings(base_url=BASE), BASE)
    try:
        assert await client.submit("tok", "gemma:2b", ["hi"]) == [good]
    finally:
        await client.aclose()


TOKEN = "upstream-token-0123456789"


@pytest.mark.parametrize(
    "echo",
    [
        f"token rejected: Bearer {TOKEN}",
        f"bad token {TOKEN} for app",
        "authorization: bearer sk-gw-AbCdEf0123456789_-xyz",
    ],
)
@respx.mock
async def test_upstream_error_text_is_masked_before_anyone_sees_it(echo: str) -> None:
    respx.post(f"{BASE}/jobs").respond(json={"success": False, "error": echo * 20})
    client = JobsClient(UpstreamSettings(base_url=BASE), BASE)
    try:
        with pytest.raises(UpstreamFailure) as info:
            await client.submit(TOKEN, "gemma:2b", ["hi"])
    finally:
        await client.aclose()
    shown = str(info.value.to_gateway_error())
    assert TOKEN not in shown and "sk-gw-" not in shown and "***" in shown
    assert len(shown) < 400


@respx.mock
async def test_a_failed_jobs_status_is_masked_too() -> None:
    job = {"states": {"default": {"status": f"failed bearer {TOKEN}", "log": ""}}}
    respx.get(f"{BASE}/jobs/{'a' * 32}").respond(json={"success": True, "jobs": {"a" * 32: job}})
    client = JobsClient(
        UpstreamSettings(base_url=BASE, failed_statuses=(f"failed bearer {TOKEN}",)), BASE
    )
    try:
        snapshot = (await client.status(TOKEN, ["a" * 32]))["a" * 32]
    finally:
        await client.aclose()
    assert snapshot.error is not None and TOKEN not in snapshot.error
