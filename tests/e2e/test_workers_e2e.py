"""Several workers as one server (``gateway serve --workers 2``), over loopback: the live view
shows every worker's requests, whichever worker answers ``GET /admin/live``."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.servers import ALICE_KEY, Server, gateway_config, running, start_gateway

ADMIN = "sk-test-admin-0123456789"


def _hold(server: Server, number: int, answers: list[int]) -> threading.Thread:
    """A chat request whose job stays queued for a few seconds (each prompt its own)."""
    prompt = f"request {number} [[emulate:reply ok]] [[emulate:queue 4]]"

    def send() -> None:
        answer = httpx.post(
            server.url + "/v1/chat/completions",
            headers={"authorization": f"Bearer {ALICE_KEY}"},
            json={"model": "gemma-2b", "messages": [{"role": "user", "content": prompt}]},
            timeout=60,
        )
        answers.append(answer.status_code)

    thread = threading.Thread(target=send)
    thread.start()
    return thread


def _live(server: Server) -> dict[str, Any]:
    # A new connection each time: either worker may take it.
    answer = httpx.get(
        server.url + "/admin/live", headers={"authorization": f"Bearer {ADMIN}"}, timeout=10
    )
    assert answer.status_code == 200
    live: dict[str, Any] = answer.json()
    return live


def test_the_live_view_shows_every_worker(
    emulator: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    metrics_dir = tmp_path / "metrics"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))
    config = gateway_config(emulator.url, admin={"key": ADMIN})
    with running(start_gateway(tmp_path, config, "--workers", "2")) as gw:
        answers: list[int] = []
        threads: list[threading.Thread] = []
        both: list[dict[str, Any]] = []
        deadline = time.monotonic() + 40
        # Requests on new connections until both workers follow some (bounded), then every
        # answer, from whichever worker, lists the jobs of both.
        while len(both) < 6 and time.monotonic() < deadline:
            if not both:
                threads += [_hold(gw, len(threads) + i, answers) for i in range(3)]
            time.sleep(0.3)
            live = _live(gw)
            workers = {row["worker"] for row in live["jobs"]}
            if len(workers) == 2:
                both.append(live)
        for thread in threads:
            thread.join()
    assert len(both) == 6, "the jobs of both workers never showed in one answer"
    for live in both:
        assert len(live["workers"]) == 2
        alice = next(a for a in live["accounts"] if a["account"] == "alice")
        assert alice["jobs_in_flight"] >= 2  # summed over the workers
    assert answers == [200] * len(threads)
    assert list((metrics_dir / "live").glob("worker-*.json")) == []  # workers cleaned up
