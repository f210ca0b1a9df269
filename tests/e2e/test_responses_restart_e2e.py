"""End to end: a background response survives its gateway being killed mid-job.

The gateway is killed (SIGKILL: no shutdown, no goodbye) while following the job; a new gateway
on the same store takes the run over when its lease runs out, and ``retrieve`` then shows the
whole, right text.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import openai

from tests.e2e.servers import ALICE_KEY, Server, gateway_config, start_gateway

REPLY = " ".join(f"word{i}" for i in range(30))


def _config(emulator: Server, tmp: Path) -> dict[str, Any]:
    return gateway_config(
        emulator.url,
        responses={
            "store_url": f"sqlite:///{tmp / 'responses.db'}",
            "background_lease_seconds": 1,
        },
    )


def _retrieve_until(api: openai.OpenAI, rid: str, done: Any, limit: float = 20) -> Any:
    deadline = time.monotonic() + limit
    while True:
        got = api.responses.retrieve(rid)
        if done(got) or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def test_a_killed_gateways_background_response_is_finished_by_the_next(
    emulator: Server, tmp_path: Path
) -> None:
    config = _config(emulator, tmp_path)
    first = start_gateway(tmp_path, config)
    try:
        api = openai.OpenAI(base_url=first.url + "/v1", api_key=ALICE_KEY, max_retries=0)
        made = api.responses.create(
            model="gemma-2b",
            input=f"[[emulate:wps 10]] [[emulate:reply {REPLY}]]",
            background=True,
        )
        partial = _retrieve_until(api, made.id, lambda r: len(r.output_text.split()) >= 3)
        assert partial.status == "in_progress"
        assert REPLY.startswith(partial.output_text)
    finally:
        first.stop(signal.SIGKILL)
    second = start_gateway(tmp_path, config)
    try:
        api = openai.OpenAI(base_url=second.url + "/v1", api_key=ALICE_KEY, max_retries=0)
        done = _retrieve_until(api, made.id, lambda r: r.status != "in_progress")
        assert done.status == "completed", second.output()
        assert done.output_text == REPLY
        assert len(done.output) == 1
        assert "following background response" in second.output()
    finally:
        second.stop()
