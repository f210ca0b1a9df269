"""End to end: a client's JSON schema can make the gateway neither fetch nor stall.

Against the session's real gateway and emulator, through the openai SDK (issue 12, items 1-2).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.servers import ALICE_KEY, Server
from tests.recorder import recording_server


def _client(gateway: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=ALICE_KEY, max_retries=0)


def _format(schema: dict[str, Any]) -> Any:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}


def _refused(gateway: Server, **fields: Any) -> openai.BadRequestError:
    with pytest.raises(openai.BadRequestError) as caught:
        _client(gateway).chat.completions.create(
            model="gemma-2b",
            messages=[{"role": "user", "content": "[[emulate:reply {}]]"}],
            **fields,
        )
    return caught.value


def test_remote_refs_are_a_400_and_never_fetched(gateway: Server) -> None:
    with recording_server() as (url, seen):
        error = _refused(gateway, response_format=_format({"$ref": f"{url}/x.json"}))
        assert error.param == "response_format.json_schema.schema"
        assert "local reference" in error.message
        tool = {
            "type": "function",
            "function": {
                "name": "f",
                "parameters": {"type": "object", "properties": {"a": {"$ref": f"{url}/a"}}},
            },
        }
        error = _refused(gateway, tools=[tool])
        assert error.param == "tools[0].function.parameters"
        # the gateway's own /healthz froze the process for good before
        error = _refused(gateway, response_format=_format({"$ref": f"{gateway.url}/healthz"}))
        assert error.status_code == 400
        assert seen == []


def test_a_file_ref_leaks_nothing(gateway: Server, tmp_path: Path) -> None:
    secret = tmp_path / "secret.json"
    secret.write_text('{"nested": {"const": "TOPSECRET-0815"}}')
    error = _refused(gateway, response_format=_format({"$ref": f"file://{secret}#/nested"}))
    assert error.param == "response_format.json_schema.schema"
    assert "TOPSECRET" not in str(error.body) and "TOPSECRET" not in error.message


def _healthz_while(gateway: Server, work: threading.Thread) -> list[float]:
    """/healthz latencies, measured back to back for as long as ``work`` runs."""
    latencies: list[float] = []
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        while work.is_alive():
            start = time.monotonic()
            assert http.get("/healthz").status_code == 200
            latencies.append(time.monotonic() - start)
    return latencies


@pytest.mark.parametrize("pattern", ["^(a+)+$", "^(a|a)+$"])
def test_a_catastrophic_pattern_does_not_stall_the_gateway(gateway: Server, pattern: str) -> None:
    evil = "a" * 27 + "!"
    outcome: list[BaseException | None] = []

    def ask() -> None:
        try:
            _client(gateway).chat.completions.create(
                model="gemma-2b",
                messages=[{"role": "user", "content": f'[[emulate:json {{"s": "{evil}"}}]]'}],
                response_format=_format(
                    {"type": "object", "properties": {"s": {"type": "string", "pattern": pattern}}}
                ),
            )
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    work = threading.Thread(target=ask)
    work.start()
    latencies = _healthz_while(gateway, work)
    work.join()
    # On a loaded machine a sample or two may come late; a stalled loop makes /healthz wait
    # for the whole check (6 s per check for the first pattern on the code before the fix).
    assert latencies and max(latencies) < 2.0, max(latencies)
    assert sum(latency > 0.5 for latency in latencies) <= 2, sorted(latencies)[-5:]
    # The answer does not match: after its retries, a clear 502 naming the pattern.
    error = outcome[0]
    assert isinstance(error, openai.APIStatusError) and error.status_code == 502, error
    assert "does not match" in error.message
