"""Session-wide real servers: one emulator and one gateway in front of it."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.servers import (
    ALICE_KEY,
    Server,
    gateway_config,
    running,
    start_emulator,
    start_gateway,
)


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running(start_emulator(tmp_path_factory.mktemp("emulator"))) as server:
        yield server


@pytest.fixture(scope="session")
def gateway(emulator: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("gateway")
    with running(start_gateway(tmp, gateway_config(emulator.url))) as server:
        yield server


@pytest.fixture
def base_url(gateway: Server) -> str:
    return gateway.url + "/v1"


def job_prompt(emulator: Server, job_id: str) -> str:
    """The prompt exactly as the upstream received it."""
    timeline = httpx.get(f"{emulator.url}/emulator/jobs/{job_id}/timeline").json()
    prompt: str = timeline["prompt"]
    return prompt


def emulator_stats(emulator: Server) -> dict[str, object]:
    stats: dict[str, object] = httpx.get(f"{emulator.url}/emulator/stats").json()
    return stats


__all__ = ["ALICE_KEY", "emulator_stats", "job_prompt"]
