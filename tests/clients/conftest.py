"""The emulator and a gateway on loopback for the real clients, and an environment that keeps
them offline: a HOME of their own, and every proxy variable pointing at a closed port, so a
request to anywhere but loopback fails instead of leaving the machine."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.servers import (
    ALICE_KEY,
    ALICE_TOKEN,
    Server,
    gateway_config,
    running,
    start_emulator,
    start_gateway,
)

#: Port 9 (discard) on loopback: nothing listens, so a proxied request fails at once.
DEAD_PROXY = "http://127.0.0.1:9"


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running(start_emulator(tmp_path_factory.mktemp("clients-emulator"))) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(emulator: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    config = gateway_config(
        emulator.url,
        models=[
            {"name": "gemma-2b", "tag": "gemma:2b", "aliases": ["claude-*", "gpt-*"]},
            # A small window, where a coding agent's system prompt alone does not fit.
            {"name": "gemma-2b-4k", "tag": "gemma:2b", "context_window": 4096},
        ],
        keys=[{"name": "alice", "key": ALICE_KEY, "upstream_token": ALICE_TOKEN}],
        limits={"keepalive_interval": 1.0, "default_deadline": 120},
    )
    with running(start_gateway(tmp_path_factory.mktemp("clients-gateway"), config)) as server:
        yield server


def offline_env(home: Path) -> dict[str, str]:
    """A client's environment: its own HOME, no way out but loopback."""
    home.mkdir(parents=True, exist_ok=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8"}
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy"):
        env[name] = DEAD_PROXY
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env
