"""Operations end to end, over loopback with real subprocesses: what /metrics shows after real
traffic, the probes, the access log, SIGTERM with streams in flight, and several workers."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from gateway.emulator import reply_for
from gateway.ops.logs import REQUEST_FIELDS
from tests.e2e.conftest import job_prompt
from tests.e2e.servers import (
    ALICE_KEY,
    ALICE_TOKEN,
    BOB_KEY,
    BOB_TOKEN,
    Server,
    free_port,
    gateway_config,
    running,
    start_gateway,
)

CAROL_KEY = "sk-test-carol-0123456789"
SECRETS = (ALICE_KEY, BOB_KEY, CAROL_KEY, ALICE_TOKEN, BOB_TOKEN)
CHAT = "/v1/chat/completions"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# ---------------------------------------------------------------- helpers


def scrape(server: Server) -> tuple[Samples, str]:
    response = httpx.get(server.url + "/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples, response.text


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


def eventually(check: Callable[[], bool], limit: float = 10.0) -> None:
    """Wait for a condition the server reaches right after answering (metrics, log lines)."""
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.05)


def chat(server: Server, key: str, content: str, **body: Any) -> httpx.Response:
    return httpx.post(
        server.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "gemma-2b", "messages": [{"role": "user", "content": content}], **body},
        timeout=30,
    )


def data_events(text: str) -> list[str]:
    return [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]


def access_lines(server: Server) -> list[dict[str, Any]]:
    entries = []
    for line in server.output().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:  # the line being written right now
            continue
        if entry.get("logger") == "gateway.access":
            entries.append(entry)
    return entries


def lines_for(server: Server, request_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    by_id: dict[str, list[dict[str, Any]]] = {rid: [] for rid in request_ids}
    for entry in access_lines(server):
        if entry.get("request_id") in by_id:
            by_id[entry["request_id"]].append(entry)
    return by_id


class Stream(threading.Thread):
    """One streamed chat request read on a thread, so several run while the test acts."""

    def __init__(self, server: Server, content: str) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.content = content
        self.started_text = threading.Event()
        self.lines: list[str] = []
        self.job_id = ""
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        body = {
            "model": "gemma-2b",
            "stream": True,
            "messages": [{"role": "user", "content": self.content}],
        }
        headers = {"Authorization": f"Bearer {ALICE_KEY}"}
        try:
            with httpx.stream(
                "POST", self.server.url + CHAT, json=body, headers=headers, timeout=30
            ) as response:
                self.job_id = response.headers.get("x-job-id", "")
                for line in response.iter_lines():
                    if line:
                        self.lines.append(line)
                    if '"delta":{"content"' in line:
                        self.started_text.set()
        except BaseException as exc:  # reported by the test, not lost on the thread
            self.error = exc
        finally:
            self.started_text.set()

    @property
    def finished(self) -> bool:
        return not self.is_alive()

    def events(self) -> list[str]:
        return data_events("\n".join(self.lines))

    def text(self) -> str:
        parts = []
        for event in self.events():
            if event != "[DONE]":
                for choice in json.loads(event).get("choices", []):
                    parts.append(choice["delta"].get("content") or "")
        return "".join(parts)


def refused(server: Server) -> bool:
    """True once connecting fails. A connection that raced the listening socket's closing (taken
    into the backlog, then dropped unanswered) is not a refusal yet: the next try decides."""
    try:
        httpx.get(server.url + "/healthz", timeout=1)
    except httpx.ConnectError:
        return True
    except httpx.RemoteProtocolError:
        return False
    return False


# ---------------------------------------------------------------- /metrics after real traffic


@pytest.fixture(scope="module")
def ops_gateway(emulator: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Alice and Bob as usual, plus Carol on Bob's upstream account with 1 request a minute."""
    config = gateway_config(emulator.url)
    carol = {"name": "carol", "key": CAROL_KEY, "upstream_token": BOB_TOKEN, "rpm": 1}
    config["keys"] = [*config["keys"], carol]
    with running(start_gateway(tmp_path_factory.mktemp("ops"), config)) as server:
        yield server


def test_metrics_follow_real_traffic(ops_gateway: Server) -> None:
    gw = ops_gateway
    before, _ = scrape(gw)

    plain = chat(gw, ALICE_KEY, "How far is the moon?")
    streamed = chat(
        gw, ALICE_KEY, "And the sun?", stream=True, stream_options={"include_usage": True}
    )
    failed = chat(gw, BOB_KEY, "Try this [[emulate:fail boom]]")
    carol_ok = chat(gw, CAROL_KEY, "[[emulate:reply fine]]")
    carol_limited = chat(gw, CAROL_KEY, "[[emulate:reply again]]")
    assert (plain.status_code, streamed.status_code, failed.status_code) == (200, 200, 502)
    assert (carol_ok.status_code, carol_limited.status_code) == (200, 429)
    events = data_events(streamed.text)
    assert events[-1] == "[DONE]"
    usages = [plain.json()["usage"], json.loads(events[-2])["usage"]]
    responses = [plain, streamed, failed, carol_ok, carol_limited]
    request_ids = [r.headers["x-request-id"] for r in responses]

    def counted(samples: Samples) -> float:
        return total(samples, "gateway_requests_total") - total(before, "gateway_requests_total")

    eventually(lambda: counted(scrape(gw)[0]) == 5)
    eventually(lambda: all(lines_for(gw, request_ids).values()))
    after, text = scrape(gw)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    requests = "gateway_requests_total"
    route = {"route": CHAT, "model": "gemma-2b"}
    assert delta(requests, key="alice", status="200", **route) == 2
    assert delta(requests, key="bob", status="502", **route) == 1
    assert delta(requests, key="carol", status="200", **route) == 1
    assert delta(requests, key="carol", status="429", **route) == 1
    assert delta("gateway_request_duration_seconds_count", **route) == 5
    assert delta("gateway_request_duration_seconds_sum", **route) > 0
    assert delta("gateway_rate_limited_total", key="carol", reason="rate_limit_exceeded") == 1

    # Time to first token and queue wait: one observation per request that saw text,
    # exactly the requests whose access-log line carries ttft_ms / queue_ms.
    logged = [entry for entries in lines_for(gw, request_ids).values() for entry in entries]
    with_ttft = sum(1 for entry in logged if entry["ttft_ms"] is not None)
    with_queue = sum(1 for entry in logged if entry["queue_ms"] is not None)
    assert with_ttft >= 3  # Alice's two and Carol's first at least
    assert delta("gateway_time_to_first_token_seconds_count", model="gemma-2b") == with_ttft
    assert delta("gateway_queue_wait_seconds_count", model="gemma-2b") == with_queue
    ttft_bucket = "gateway_time_to_first_token_seconds_bucket"
    assert delta(ttft_bucket, model="gemma-2b", le="+Inf") == with_ttft

    # Upstream calls: four jobs submitted (the refused request never reached it), polled.
    upstream = "gateway_upstream_requests_total"
    assert delta(upstream, kind="submit", outcome="ok") == 4
    assert delta(upstream, kind="status", outcome="ok") >= 1
    assert delta("gateway_upstream_request_duration_seconds_count", kind="submit") == 4
    status_calls = delta("gateway_upstream_request_duration_seconds_count", kind="status")
    assert status_calls == delta(upstream, kind="status", outcome="ok")
    ids_per_request = delta("gateway_status_request_ids_count")
    assert ids_per_request >= 1
    assert delta("gateway_status_request_ids_sum") >= ids_per_request

    # Tokens: exactly what the answers reported as usage; refusals count nothing.
    tokens = "gateway_tokens_total"
    alice = {"key": "alice", "model": "gemma-2b"}
    assert delta(tokens, direction="prompt", **alice) == sum(u["prompt_tokens"] for u in usages)
    assert delta(tokens, direction="completion", **alice) == sum(
        u["completion_tokens"] for u in usages
    )
    carol_tokens = delta(tokens, direction="prompt", key="carol", model="gemma-2b")
    assert carol_tokens == carol_ok.json()["usage"]["prompt_tokens"]

    # Nothing stays in flight once every answer ended.
    eventually(
        lambda: all(
            value(scrape(gw)[0], "gateway_jobs_in_flight", account=name) == 0
            for name in ("alice", "bob")
        )
    )
    assert value(after, "gateway_circuit_open", account="alice") == 0

    # Labels carry names, never keys or tokens.
    for secret in SECRETS:
        assert secret not in text
    keys = {dict(labels).get("key") for (_, labels) in after} - {None}
    assert keys <= {"alice", "bob", "carol", "-"}
    accounts = {dict(labels).get("account") for (_, labels) in after} - {None}
    assert accounts == {"alice", "bob"}


def test_access_log_is_one_json_line_per_request_without_prompt_or_secret(
    ops_gateway: Server,
) -> None:
    gw = ops_gateway
    marker = "zebra-quartz-7731 is my prompt"
    first = chat(gw, ALICE_KEY, f"{marker}, please answer")
    second = chat(gw, BOB_KEY, f"{marker} again", stream=True)
    refused_key = chat(gw, "sk-not-a-key-00000000", marker)
    assert (first.status_code, second.status_code, refused_key.status_code) == (200, 200, 401)
    ids = [r.headers["x-request-id"] for r in (first, second, refused_key)]
    eventually(lambda: all(lines_for(gw, ids).values()))

    by_id = lines_for(gw, ids)
    assert all(len(entries) == 1 for entries in by_id.values()), by_id
    (line_a,), (line_b,), (line_c,) = by_id.values()
    for entry in (line_a, line_b, line_c):
        assert set(REQUEST_FIELDS) <= set(entry)
        assert entry["route"] == CHAT
        assert entry["duration_ms"] >= 0
    assert (line_a["key"], line_a["model"], line_a["status"], line_a["outcome"]) == (
        "alice",
        "gemma-2b",
        200,
        "ok",
    )
    assert line_a["job_ids"] == [first.headers["x-job-id"]]
    assert line_a["prompt_tokens"] == first.json()["usage"]["prompt_tokens"]
    assert line_a["completion_tokens"] == first.json()["usage"]["completion_tokens"]
    assert line_a["ttft_ms"] is not None and line_a["queue_ms"] is not None
    assert (line_b["key"], line_b["status"], line_b["stream"]) == ("bob", 200, True)
    assert line_b["job_ids"] == [second.headers["x-job-id"]]
    assert (line_c["key"], line_c["status"], line_c["job_ids"]) == (None, 401, [])

    output = gw.output()
    assert all(line.startswith("{") for line in output.splitlines() if line.strip())
    assert "zebra-quartz" not in output
    for secret in (*SECRETS, "sk-not-a-key-00000000"):
        assert secret not in output
    # One line per request, not one per upstream call.
    assert not [line for line in output.splitlines() if '"logger": "httpx"' in line]


# ---------------------------------------------------------------- probes


def test_readyz_follows_the_upstream_and_healthz_does_not(tmp_path: Path) -> None:
    port = free_port()
    config = gateway_config(f"http://127.0.0.1:{port}")
    config["upstream"] |= {"submit_retries": 0, "circuit_breaker": {"failure_threshold": 1000}}
    with running(start_gateway(tmp_path, config)) as gw:
        response = httpx.get(gw.url + "/readyz")
        assert response.status_code == 503
        assert response.json()["checks"] == {"config": True, "accepting": True, "upstream": False}
        assert httpx.get(gw.url + "/healthz").status_code == 200

        emulator_args = ["emulator", "--port", str(port), "--queue-seconds", "0"]
        emulator_args += ["--token", ALICE_TOKEN, "--token", BOB_TOKEN]
        upstream = Server(emulator_args, port, "/emulator/stats", tmp_path / "emulator.log")
        with running(upstream):
            response = httpx.get(gw.url + "/readyz")
            assert response.status_code == 200
            assert response.json()["status"] == "ready"
            assert chat(gw, ALICE_KEY, "[[emulate:reply up]]").json()["choices"]

        # The upstream went away: the next call fails, and readiness follows at once.
        assert chat(gw, ALICE_KEY, "hello?").status_code >= 500
        response = httpx.get(gw.url + "/readyz")
        assert response.status_code == 503
        assert response.json()["checks"]["upstream"] is False
        assert httpx.get(gw.url + "/healthz").status_code == 200


# ---------------------------------------------------------------- SIGTERM


def test_sigterm_lets_streams_in_flight_finish(emulator: Server, tmp_path: Path) -> None:
    grace = 10.0
    config = gateway_config(emulator.url, server={"graceful_shutdown_seconds": grace})
    gw = start_gateway(tmp_path, config)
    try:
        streams = [
            Stream(gw, f"Story {i} [[emulate:words 15]] [[emulate:wps 6]] [[emulate:queue 0]]")
            for i in range(3)
        ]
        for stream in streams:
            assert stream.started_text.wait(15) and stream.error is None
        gw.process.send_signal(signal.SIGTERM)
        # New connections are refused while the streams are still running.
        eventually(lambda: refused(gw), limit=5)
        assert not all(stream.finished for stream in streams)
        code = gw.process.wait(timeout=grace + 5)
    finally:
        gw.stop()
    assert code == 0
    for stream in streams:
        stream.join(5)
        assert stream.error is None
        events = stream.events()
        assert events[-1] == "[DONE]"
        assert json.loads(events[-2])["choices"][0]["finish_reason"] == "stop"
        assert stream.text() == reply_for(job_prompt(emulator, stream.job_id))
    output = gw.output()
    assert "shutting down" in output
    assert output.count('"outcome": "ok"') == 3


def test_sigterm_ends_a_stream_that_cannot_finish_with_a_final_event(
    emulator: Server, tmp_path: Path
) -> None:
    grace = 3.0
    config = gateway_config(emulator.url, server={"graceful_shutdown_seconds": grace})
    gw = start_gateway(tmp_path, config)
    try:
        waiting: list[httpx.Response] = []
        plain = threading.Thread(
            target=lambda: waiting.append(chat(gw, ALICE_KEY, "Wait [[emulate:hang]]")),
            daemon=True,
        )
        plain.start()
        # The JSON request gives no sign of life but its job, followed by the poller.
        eventually(lambda: value(scrape(gw)[0], "gateway_jobs_in_flight", account="alice") == 1)
        hanging = Stream(gw, "Go on [[emulate:hang]] [[emulate:queue 0]]")
        short = Stream(gw, "Quick [[emulate:words 6]] [[emulate:wps 6]] [[emulate:queue 0]]")
        assert hanging.started_text.wait(15) and short.started_text.wait(15)
        gw.process.send_signal(signal.SIGTERM)
        try:
            code = gw.process.wait(timeout=grace + 3)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the gateway did not exit within its grace period of {grace} s")
    finally:
        gw.stop()
    assert code == 0
    hanging.join(5)
    short.join(5)
    assert hanging.error is None and short.error is None
    last = json.loads(hanging.events()[-1])
    assert last["error"]["code"] == "server_shutdown"
    assert last["error"]["type"] == "server_error"
    assert short.events()[-1] == "[DONE]"
    assert short.text() == reply_for(job_prompt(emulator, short.job_id))
    # A request waiting for one JSON answer gets the same error as a real status.
    plain.join(5)
    (response,) = waiting
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "server_shutdown"
    assert gw.output().count('"outcome": "server_shutdown"') == 2


# ---------------------------------------------------------------- several workers


def requests_by_worker(directory: Path, scratch: Path) -> dict[str, float]:
    """Requests counted by each worker, read from its own multiprocess file."""
    counts: dict[str, float] = {}
    for path in directory.glob("counter_*.db"):
        pid = path.stem.removeprefix("counter_")
        alone = scratch / pid
        alone.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, alone / path.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))  # type: ignore[no-untyped-call]
        counts[pid] = sum(
            sample.value
            for family in registry.collect()
            for sample in family.samples
            if sample.name == "gateway_requests_total"
        )
    return counts


def test_one_worker_keeps_its_metrics_in_memory_even_with_a_multiprocess_dir(
    emulator: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The image sets PROMETHEUS_MULTIPROC_DIR; one worker has nothing to merge, so it uses
    prometheus-client's single-process mode (no file written per observation)."""
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))
    gw = start_gateway(tmp_path, gateway_config(emulator.url))
    try:
        reply = chat(gw, ALICE_KEY, "[[emulate:reply ok]] [[emulate:queue 0]]")
        assert reply.status_code == 200
        scrape = httpx.get(gw.url + "/metrics").text
    finally:
        gw.stop()
    assert list(metrics_dir.iterdir()) == []
    assert "process_resident_memory_bytes" in scrape  # only single-process mode exports it
    assert "gateway_requests_total{" in scrape


def test_several_workers_report_one_set_of_metrics(
    emulator: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"left over from an earlier run")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))
    gw = start_gateway(tmp_path, gateway_config(emulator.url), "--workers", "2")
    sent = 0
    try:
        assert not (metrics_dir / "counter_1.db").exists()

        def batch() -> None:
            nonlocal sent
            replies: list[httpx.Response] = []
            threads = [
                threading.Thread(
                    target=lambda: replies.append(
                        chat(gw, ALICE_KEY, "[[emulate:reply ok]] [[emulate:queue 0]]")
                    )
                )
                for _ in range(4)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert [r.status_code for r in replies] == [200] * 4
            sent += 4

        # Concurrent connections until both workers have served some (bounded).
        batch()
        for _ in range(15):
            served = requests_by_worker(metrics_dir, tmp_path / "scratch")
            if sum(1 for count in served.values() if count) >= 2:
                break
            batch()
        # A request is counted just after its answer went out: wait for the last ones.
        scratch = tmp_path / "scratch"
        eventually(lambda: sum(requests_by_worker(metrics_dir, scratch).values()) == sent)
        served = requests_by_worker(metrics_dir, scratch)
        assert sum(1 for count in served.values() if count) == 2, served

        # Whichever worker answers the scrape, it reports every worker's requests.
        for _ in range(6):
            samples, text = scrape(gw)
            assert total(samples, "gateway_requests_total") == sent
            labels = {"key": "alice", "model": "gemma-2b", "route": CHAT, "status": "200"}
            assert value(samples, "gateway_requests_total", **labels) == sent
            assert value(samples, "gateway_jobs_in_flight", account="alice") == 0
            assert "process_resident_memory_bytes" not in text  # one worker's view only
            for secret in SECRETS:
                assert secret not in text
        code = gw.stop()
    finally:
        gw.stop()
    assert code == 0
