"""Several workers as one server (``gateway serve --workers 2``), over loopback: the live view
shows every worker's requests, whichever worker answers ``GET /admin/live``; background
Responses runs started on one worker are retrieved and streamed from either."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.servers import ALICE_KEY, Server, gateway_config, running, start_gateway
from tests.e2e.test_ops_e2e import requests_by_worker

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
        # Requests on new connections whenever the view does not show both workers following
        # some (bounded: on a slow machine the held jobs may end first); each answer that does,
        # from whichever worker, lists the jobs of both.
        while len(both) < 6 and time.monotonic() < deadline:
            live = _live(gw)
            workers = {row["worker"] for row in live["jobs"]}
            if len(workers) == 2:
                both.append(live)
            else:
                threads += [_hold(gw, len(threads) + i, answers) for i in range(3)]
            time.sleep(0.3)
        for thread in threads:
            thread.join()
    assert len(both) == 6, "the jobs of both workers never showed in one answer"
    for live in both:
        assert len(live["workers"]) == 2
        alice = next(a for a in live["accounts"] if a["account"] == "alice")
        assert alice["jobs_in_flight"] >= 2  # summed over the workers
    assert answers == [200] * len(threads)
    assert list((metrics_dir / "live").glob("worker-*.json")) == []  # workers cleaned up


def _sse(text: str) -> list[dict[str, Any]]:
    events = []
    for block in text.split("\n\n"):
        data = [line[6:] for line in block.split("\n") if line.startswith("data: ")]
        if data:
            events.append(json.loads("".join(data)))
    return events


def test_background_responses_run_and_are_read_across_workers(
    emulator: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every call on a new connection, so either worker may take it: the run goes on in the
    worker that took the POST, and the store (one SQLite file) serves it to both."""
    metrics_dir = tmp_path / "metrics"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))
    config = gateway_config(emulator.url, ledger={"url": f"sqlite:///{tmp_path / 'gw.db'}"})
    headers = {"authorization": f"Bearer {ALICE_KEY}"}
    with running(start_gateway(tmp_path, config, "--workers", "2")) as gw:
        made: dict[str, str] = {}
        for number in range(6):
            reply = f"run {number} alpha beta gamma delta epsilon"
            created = httpx.post(
                gw.url + "/v1/responses",
                headers=headers,
                json={
                    "model": "gemma-2b",
                    "input": f"bg {number} [[emulate:wps 15]] [[emulate:reply {reply}]]",
                    "background": True,
                },
                timeout=30,
            )
            assert created.status_code == 200, created.text
            assert created.json()["status"] == "queued"
            made[created.json()["id"]] = reply
        for response_id, reply in made.items():  # streamed while it runs, from any worker
            streamed = httpx.get(
                f"{gw.url}/v1/responses/{response_id}",
                headers=headers,
                params={"stream": "true"},
                timeout=30,
            )
            events = _sse(streamed.text)
            deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
            assert "".join(deltas) == reply
            assert events[-1]["type"] == "response.completed"
            numbers = [e["sequence_number"] for e in events]
            assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
        for response_id, reply in made.items():  # and read back, several times each
            for _ in range(3):
                body = httpx.get(
                    f"{gw.url}/v1/responses/{response_id}", headers=headers, timeout=30
                ).json()
                assert body["status"] == "completed"
                assert body["output"][-1]["content"][0]["text"] == reply
        served = requests_by_worker(metrics_dir, tmp_path / "scratch")
    assert sum(1 for count in served.values() if count) == 2, served
