"""The emulator on real loopback sockets, and its command-line options."""

from __future__ import annotations

import argparse
import json
from typing import Any

import httpx
import pytest

from gateway.config import EmulatorSettings
from gateway.emulator.directives import reply_for
from gateway.emulator.engine import EmulatorConfig
from gateway.emulator.server import (
    DEFAULT_PORT,
    EmbeddedEmulator,
    add_emulator_arguments,
    config_from_args,
)

APP = "gridrepublic:text-inference"
FAST = EmulatorConfig(tokens=frozenset({"tok"}), queue_seconds=0.0, words_per_second=1000.0)


def submit_body(*prompts: str) -> dict[str, str]:
    return {"app": APP, "tag": "m", "commandLine": json.dumps({"inputs": list(prompts)})}


async def test_embedded_emulator_serves_on_a_free_port() -> None:
    async with EmbeddedEmulator(FAST) as emulator:
        assert emulator.base_url.startswith("http://127.0.0.1:")
        assert emulator.port != 0 and emulator.base_url.endswith(f":{emulator.port}")
        headers = {"Authorization": "Bearer tok"}
        for base_url in (emulator.base_url, emulator.base_url + "/remotejobs/v2"):
            async with httpx.AsyncClient(base_url=base_url, headers=headers) as client:
                response = await client.post("/jobs", json=submit_body("[[emulate:words 3]]"))
                (job_id,) = response.json()["ids"]
                job: dict[str, Any] = {}
                while job.get("vmStatus") != "stopped":
                    response = await client.get(f"/jobs/{job_id}")
                    job = response.json()["jobs"][job_id]
                assert job["states"]["default"]["log"] == reply_for("[[emulate:words 3]]")
        assert emulator.engine.stats.jobs_created == 2
    with pytest.raises(RuntimeError):
        _ = emulator.base_url


async def test_reset_fault_breaks_a_real_connection() -> None:
    async with (
        EmbeddedEmulator(FAST) as emulator,
        httpx.AsyncClient(
            base_url=emulator.base_url, headers={"Authorization": "Bearer tok"}
        ) as client,
    ):
        await client.post("/emulator/faults", json={"status": [{"reset": True}]})
        with pytest.raises(httpx.TransportError):
            await client.get("/jobs/abc")
        response = await client.get("/jobs/abc")
        assert response.json() == {"success": True, "jobs": {}}


async def test_stop_is_idempotent_and_start_twice_fails() -> None:
    emulator = EmbeddedEmulator(FAST)
    await emulator.stop()
    await emulator.start()
    try:
        with pytest.raises(RuntimeError):
            await emulator.start()
    finally:
        await emulator.stop()
    await emulator.stop()


def test_from_settings() -> None:
    settings = EmulatorSettings(port=0, token="t0k", queue_seconds=0.2, words_per_second=5)
    emulator = EmbeddedEmulator.from_settings(settings)
    assert (emulator.host, emulator.port) == ("127.0.0.1", 0)
    assert emulator.engine.config.tokens == frozenset({"t0k"})
    assert emulator.engine.config.words_per_second == 5


def test_cli_arguments() -> None:
    parser = argparse.ArgumentParser()
    add_emulator_arguments(parser)
    args = parser.parse_args([])
    assert (args.host, args.port) == ("127.0.0.1", DEFAULT_PORT)
    assert config_from_args(args) == EmulatorConfig()
    args = parser.parse_args(
        [
            "--port",
            "0",
            "--token",
            "a",
            "--token",
            "b",
            "--queue-seconds",
            "0",
            "--words-per-second",
            "100",
            "--finished-status",
            "done",
            "--words",
            "5",
        ]
    )
    assert args.port == 0
    assert config_from_args(args) == EmulatorConfig(
        tokens=frozenset({"a", "b"}),
        queue_seconds=0.0,
        words_per_second=100.0,
        finished_status="done",
        default_words=5,
    )
