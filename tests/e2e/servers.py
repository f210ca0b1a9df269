"""Real servers on loopback for end-to-end tests: the emulator and gateways as subprocesses."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.e2e import zygote
from tests.e2e.zygote import ForkedProcess

ALICE_KEY = "sk-test-alice-0123456789"
BOB_KEY = "sk-test-bob-0123456789"
ALICE_TOKEN = "upstream-token-team-a"
BOB_TOKEN = "upstream-token-team-b"


#: Ports servers listen on: below Linux's ephemeral range (32768-60999), where the ports of
#: outgoing connections come from, and a block of its own per xdist worker. A port the OS picked
#: (bind to 0) could be taken between the check and the server's own bind, by another worker's
#: server or by any outgoing connection: the test then talked to a stranger that answered.
PORTS_BASE, PORTS_PER_WORKER = 20_000, 1_500
_next_ports = itertools.count()


def free_port() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    block = PORTS_BASE + (int(worker) % 8 if worker.isdigit() else 0) * PORTS_PER_WORKER
    for _ in range(PORTS_PER_WORKER):
        port = block + next(_next_ports) % PORTS_PER_WORKER
        with socket.socket() as sock, contextlib.suppress(OSError):
            sock.bind(("127.0.0.1", port))
            return port
    raise RuntimeError(f"no free port in {block}-{block + PORTS_PER_WORKER - 1}")


def wait_ready(
    process: subprocess.Popen[bytes] | ForkedProcess, url: str, limit: float, interval: float
) -> str | None:
    """Wait until ``url`` answers below 500; None when it did, else what went wrong."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return "exited early"
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code < 500:
                return None
        time.sleep(interval)
    return f"not ready in {limit:g}s"


class Server:
    """A subprocess serving HTTP on 127.0.0.1; waits until ``ready_path`` answers."""

    def __init__(self, args: list[str], port: int, ready_path: str, log: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("GATEWAY_CONFIG", None)
        self._out = log.open("wb")
        self.process: subprocess.Popen[bytes] | ForkedProcess
        if zygote.enabled():  # forked from an imported gateway: see tests/e2e/zygote.py
            self.process = zygote.zygote().spawn(args, env, log)
        else:
            self.process = subprocess.Popen(
                [*zygote.COMMAND, *args], stdout=self._out, stderr=subprocess.STDOUT, env=env
            )
        self._wait_ready(ready_path)

    def _wait_ready(self, path: str, limit: float = 30.0) -> None:
        problem = wait_ready(self.process, self.url + path, limit, interval=0.05)
        if problem is not None:
            self.stop(signal.SIGKILL)  # not left running (and holding its port) after the test
            raise RuntimeError(f"server {problem}:\n{self.log.read_text()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def records(self) -> list[dict[str, Any]]:
        """The JSON log lines written so far, parsed (other lines are skipped)."""
        records = []
        for line in self.output().splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    records.append(record)
        return records

    def stop(self, sig: int = signal.SIGTERM, wait: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(wait)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._out.close()
        return self.process.returncode


def start_emulator(tmp: Path, *extra: str) -> Server:
    port = free_port()
    args = ["emulator", "--port", str(port), "--queue-seconds", "0.2", "--words-per-second", "40"]
    args += ["--token", ALICE_TOKEN, "--token", BOB_TOKEN, *extra]
    return Server(args, port, "/emulator/stats", tmp / f"emulator-{port}.log")


def gateway_config(upstream_url: str, /, **overrides: Any) -> dict[str, Any]:
    """A test config; each keyword replaces (or, for mappings, updates) one section."""
    config: dict[str, Any] = {
        "upstream": {"base_url": upstream_url, "poll_interval": 0.05},
        "models": [
            {"name": "gemma-2b", "tag": "gemma:2b", "aliases": ["gpt-3.5-turbo"]},
            {"name": "llama2-uncensored", "tag": "llama2-uncensored", "template": "llama2"},
        ],
        "keys": [
            {"name": "alice", "key": ALICE_KEY, "upstream_token": ALICE_TOKEN},
            {"name": "bob", "key": BOB_KEY, "upstream_token": BOB_TOKEN},
        ],
        "limits": {"keepalive_interval": 1.0, "default_deadline": 30},
        "ledger": {"url": "sqlite:///:memory:"},
        "logging": {"format": "json", "level": "info"},
    }
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(config.get(section), dict):
            config[section] = {**config[section], **values}
        else:
            config[section] = values
    return config


def start_gateway(tmp: Path, config: dict[str, Any], *extra: str) -> Server:
    port = free_port()
    path = tmp / f"gateway-{port}.yaml"
    path.write_text(yaml.safe_dump(config))
    args = ["serve", "--config", str(path), "--port", str(port), *extra]
    return Server(args, port, "/healthz", tmp / f"gateway-{port}.log")


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    try:
        yield server
    finally:
        server.stop()
