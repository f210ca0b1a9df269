"""End to end: a background response survives its gateway being killed mid-job.

The gateway is killed (SIGKILL: no shutdown, no goodbye) or stopped (SIGTERM: it hands its runs
over) while following the job; a new gateway on the same store takes the run over (when its
lease runs out, or at once), and ``retrieve`` then shows the whole, right text.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.e2e.servers import ALICE_KEY, Server, gateway_config, start_gateway

REPLY = " ".join(f"word{i}" for i in range(24))


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


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["killed", "stopped"])
def test_a_killed_gateways_background_response_is_finished_by_the_next(
    emulator: Server, tmp_path: Path, sig: signal.Signals
) -> None:
    config = _config(emulator, tmp_path)
    first = start_gateway(tmp_path, config)
    try:
        api = openai.OpenAI(base_url=first.url + "/v1", api_key=ALICE_KEY, max_retries=0)
        made = api.responses.create(
            model="gemma-2b",
            input=f"[[emulate:wps 12]] [[emulate:reply {REPLY}]]",
            background=True,
        )
        partial = _retrieve_until(api, made.id, lambda r: len(r.output_text.split()) >= 3)
        assert partial.status == "in_progress"
        assert REPLY.startswith(partial.output_text)
    finally:
        first.stop(sig)
    if sig == signal.SIGTERM:  # a graceful stop hands the run over, and says so
        assert "handed_over" in [r.get("outcome") for r in first.records()]
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


def test_a_background_response_holds_its_keys_concurrency_slot(
    emulator: Server, tmp_path: Path
) -> None:
    config = _config(emulator, tmp_path)
    config["keys"] = [{**config["keys"][0], "max_concurrent": 1}]
    server = start_gateway(tmp_path, config)
    try:
        api = openai.OpenAI(base_url=server.url + "/v1", api_key=ALICE_KEY, max_retries=0)
        made = api.responses.create(
            model="gemma-2b", input="[[emulate:wps 10]] [[emulate:words 12]]", background=True
        )
        with pytest.raises(openai.RateLimitError):  # the run holds the key's one slot
            api.responses.create(model="gemma-2b", input="and me? [[emulate:reply no]]")
        done = _retrieve_until(api, made.id, lambda r: r.status == "completed")
        assert done.status == "completed"
        deadline = time.monotonic() + 5
        while True:  # the slot is free once the run has ended
            try:
                again = api.responses.create(model="gemma-2b", input="now [[emulate:reply yes]]")
                break
            except openai.RateLimitError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert again.output_text == "yes"
    finally:
        server.stop()
