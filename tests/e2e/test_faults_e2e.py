"""The fault matrix: every way the upstream misbehaves, injected in a real emulator, through a
real gateway. Each case ends in the right answer (after retries) or in a clear OpenAI-shaped
error with the right status within the request's deadline; afterwards nothing is left in
flight (jobs in the poller, streams, requests, event-loop tasks) and the log holds no
traceback. This module runs its own emulator and gateways: injected faults are global to an
emulator and must not reach other tests.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.emulator import reply_for
from tests.e2e.conftest import emulator_stats, job_prompt
from tests.e2e.observe import in_flight, metric, metric_samples, settle, status_requests
from tests.e2e.servers import (
    ALICE_KEY,
    ALICE_TOKEN,
    BOB_TOKEN,
    Server,
    free_port,
    gateway_config,
    running,
    start_emulator,
    start_gateway,
)

DEADLINE = 4.0  # the gateway's default deadline in this module
CHAT = "/v1/chat/completions"
AUTH = {"authorization": f"Bearer {ALICE_KEY}"}
#: A bound on every HTTP call of these tests: a hang fails the test instead of stalling it.
CLIENT_TIMEOUT = DEADLINE + 20


def _config(upstream: str, **upstream_overrides: Any) -> dict[str, Any]:
    config = gateway_config(upstream)
    config["upstream"].update(
        {
            "poll_interval": 0.05,
            "poll_backoff_max": 0.5,
            "read_timeout": 1.0,
            "connect_timeout": 1.0,
            "missing_job_ticks": 10,
            "submit_retries": 2,
            # Fault cases must not trip each other's circuit: its own test has its own gateway.
            "circuit_breaker": {"failure_threshold": 1000, "reset_seconds": 1.0},
            **upstream_overrides,
        }
    )
    config["limits"].update({"default_deadline": DEADLINE, "keepalive_interval": 1.0})
    return config


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running(start_emulator(tmp_path_factory.mktemp("faults-emulator"))) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(emulator: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("faults-gateway")
    with running(start_gateway(tmp, _config(emulator.url))) as server:
        yield server


@pytest.fixture(scope="module")
def idle_tasks(gateway: Server) -> float:
    """The gateway's event-loop task count at rest, after one request warmed it up."""
    answer = httpx.post(gateway.url + CHAT, json=_body("warm up"), headers=AUTH, timeout=30)
    assert answer.status_code == 200
    return settle(gateway).tasks


@pytest.fixture(autouse=True)
def leaves_nothing_behind(emulator: Server, gateway: Server, idle_tasks: float) -> Iterator[None]:
    httpx.delete(emulator.url + "/emulator/faults")
    log_start = len(gateway.output())
    yield
    httpx.delete(emulator.url + "/emulator/faults")
    state = settle(gateway, tasks=idle_tasks)
    assert state.idle, state
    assert state.tasks <= idle_tasks, state
    log = gateway.output()[log_start:]
    assert "Traceback" not in log
    statuses = [json.loads(line).get("status") for line in log.splitlines() if line[:1] == "{"]
    assert 500 not in statuses


#: Short, quick jobs unless a test's own directives (later in the prompt, so they win) say else.
QUICK = "[[emulate:queue 0.05]] [[emulate:words 8]] "


def _body(content: str, stream: bool = False, **extra: Any) -> dict[str, Any]:
    return {
        "model": "gemma-2b",
        "messages": [{"role": "user", "content": QUICK + content}],
        "stream": stream,
        **extra,
    }


def _faults(emulator: Server, **faults: Any) -> None:
    answer = httpx.post(emulator.url + "/emulator/faults", json=faults)
    assert answer.status_code == 200, answer.text


def _pending(emulator: Server) -> dict[str, list[Any]]:
    pending: dict[str, list[Any]] = httpx.get(emulator.url + "/emulator/faults").json()["pending"]
    return pending


def _post(gateway: Server, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(
        gateway.url + CHAT, json=body, headers={**AUTH, **headers}, timeout=CLIENT_TIMEOUT
    )


def _error(answer: httpx.Response) -> dict[str, Any]:
    """The OpenAI error object of an answer, checked for shape."""
    assert answer.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    return error


def _events(answer: httpx.Response) -> list[dict[str, Any]]:
    """The JSON events of an SSE answer (``[DONE]`` as {"done": True})."""
    events = []
    for line in answer.text.splitlines():
        if line.startswith("data: "):
            data = line.removeprefix("data: ")
            events.append({"done": True} if data == "[DONE]" else json.loads(data))
    return events


def _streamed_text(events: list[dict[str, Any]]) -> str:
    return "".join(
        e["choices"][0]["delta"].get("content") or "" for e in events if e.get("choices")
    )


def _deadline_in(message: str) -> float:
    found = re.search(r"deadline of ([0-9.]+) s", message)
    assert found, message
    return float(found.group(1))


def _expected(emulator: Server, answer: httpx.Response) -> str:
    return reply_for(job_prompt(emulator, answer.headers["x-job-id"]))


# ---------------------------------------------------------------- submission faults


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("code", [500, 503])
def test_a_5xx_on_submit_is_not_retried_and_answers_502(
    emulator: Server, gateway: Server, code: int, stream: bool
) -> None:
    _faults(emulator, submit={"http": code})
    before = emulator_stats(emulator)
    answer = _post(gateway, _body("five hundred", stream))
    after = emulator_stats(emulator)
    assert answer.status_code == 502  # a real status, even for a stream: nothing was sent yet
    error = _error(answer)
    assert error["type"] == "upstream_error"
    assert f"HTTP {code}" in error["message"]
    # It may have created a job upstream: never sent twice.
    assert after["submit_requests"] - before["submit_requests"] == 1  # type: ignore[operator]
    assert after["jobs_created"] == before["jobs_created"]


def test_a_429_on_submit_is_retried_after_retry_after(emulator: Server, gateway: Server) -> None:
    _faults(emulator, submit={"http": 429, "retry_after": 0.2})
    before = emulator_stats(emulator)
    answer = _post(gateway, _body("rate limited once"))
    after = emulator_stats(emulator)
    assert answer.status_code == 200
    assert answer.json()["choices"][0]["message"]["content"] == _expected(emulator, answer)
    assert after["submit_requests"] - before["submit_requests"] == 2  # type: ignore[operator]
    assert after["jobs_created"] - before["jobs_created"] == 1  # type: ignore[operator]


def test_a_persistent_429_on_submit_is_passed_on(emulator: Server, gateway: Server) -> None:
    _faults(emulator, submit={"http": 429, "retry_after": 0.1, "repeat": True})
    before = emulator_stats(emulator)
    answer = _post(gateway, _body("rate limited always"))
    after = emulator_stats(emulator)
    assert answer.status_code == 429
    assert _error(answer)["code"] == "upstream_rate_limited"
    assert int(answer.headers["retry-after"]) >= 1
    assert after["submit_requests"] - before["submit_requests"] == 3  # type: ignore[operator]
    assert after["jobs_created"] == before["jobs_created"]


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        ({"delay": 1.5}, "did not answer in time"),  # longer than upstream.read_timeout
        ({"reset": True}, "connection to the upstream failed"),
        ({"not_json": True}, "not JSON"),
        ({"success_false": "Invalid input format"}, "Invalid input format"),
    ],
    ids=["timeout", "reset", "not-json", "success-false"],
)
def test_a_broken_submit_answer_is_a_clear_502_and_never_resent(
    emulator: Server, gateway: Server, fault: dict[str, Any], words: str
) -> None:
    _faults(emulator, submit=fault)
    before = emulator_stats(emulator)
    answer = _post(gateway, _body("broken submit"))
    after = emulator_stats(emulator)
    assert answer.status_code == 502
    error = _error(answer)
    assert error["type"] == "upstream_error" and words in error["message"]
    assert after["submit_requests"] - before["submit_requests"] == 1  # type: ignore[operator]


# ---------------------------------------------------------------- status faults


@pytest.mark.parametrize(
    "faults",
    [
        [{"http": 503}] * 3,
        [{"http": 500, "body": "Internal Server Error"}, {"http": 502}],
        [{"http": 429, "retry_after": 0.2}],
        [{"delay": 1.5}],  # longer than upstream.read_timeout
        [{"reset": True}] * 2,
        [{"not_json": True}] * 2,
        [{"success_false": "temporarily unavailable"}] * 2,
        [{"missing": True}] * 3,  # fewer than missing_job_ticks
    ],
    ids=["503", "500-502", "429", "timeout", "reset", "not-json", "success-false", "missing"],
)
@pytest.mark.parametrize("stream", [False, True])
def test_status_faults_are_retried_and_the_answer_is_whole(
    emulator: Server, gateway: Server, faults: list[dict[str, Any]], stream: bool
) -> None:
    _faults(emulator, status=faults)
    answer = _post(gateway, _body(f"status faults {len(faults)}", stream))
    assert answer.status_code == 200
    expected = _expected(emulator, answer)
    if stream:
        events = _events(answer)
        assert events[-1] == {"done": True}
        assert _streamed_text(events) == expected
    else:
        assert answer.json()["choices"][0]["message"]["content"] == expected
    assert _pending(emulator)["status"] == []  # every fault was met


def test_a_status_outage_ends_in_504_within_the_deadline(emulator: Server, gateway: Server) -> None:
    _faults(emulator, status={"http": 503, "repeat": True})
    answer = _post(gateway, _body("status outage"), **{"x-stainless-timeout": "2"})
    assert answer.status_code == 504
    error = _error(answer)
    assert error["code"] == "deadline_exceeded"
    assert _deadline_in(error["message"]) <= 2  # the client's own timeout header counts
    assert "status requests are failing" in error["message"]


def test_a_job_that_vanishes_fails_with_502(emulator: Server, gateway: Server) -> None:
    answer = _post(gateway, _body("gone [[emulate:vanish]]"))
    assert answer.status_code == 502
    error = _error(answer)
    assert error["code"] == "job_failed" and "stopped reporting" in error["message"]


def test_a_failed_job_is_a_502(emulator: Server, gateway: Server) -> None:
    answer = _post(gateway, _body("doomed [[emulate:fail out of memory]]"))
    assert answer.status_code == 502
    error = _error(answer)
    assert error["code"] == "job_failed" and "failed" in error["message"]


def test_a_job_failing_mid_stream_ends_the_stream_with_an_error(
    emulator: Server, gateway: Server
) -> None:
    client = openai.OpenAI(
        base_url=gateway.url + "/v1", api_key=ALICE_KEY, max_retries=0, timeout=CLIENT_TIMEOUT
    )
    stream = client.chat.completions.create(
        model="gemma-2b",
        messages=[{"role": "user", "content": "doomed [[emulate:fail disk full]]"}],
        stream=True,
    )
    texts: list[str] = []
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            texts.append(chunk.choices[0].delta.content or "")
    assert "failed" in info.value.message
    assert "".join(texts).strip()  # the words before the failure did arrive


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("directive", ["shrink", "ansi"])
def test_a_shrinking_or_decorated_log_gives_the_answer_once(
    emulator: Server, gateway: Server, directive: str, stream: bool
) -> None:
    answer = _post(gateway, _body(f"tell me [[emulate:{directive}]] [[emulate:words 30]]", stream))
    assert answer.status_code == 200
    if stream:
        events = _events(answer)
        assert events[-1] == {"done": True}
        text = _streamed_text(events)
    else:
        text = answer.json()["choices"][0]["message"]["content"]
    assert text == _expected(emulator, answer)


REWRITE = "tell me [[emulate:rewrite]] [[emulate:words 30]]"


def test_a_rewritten_log_ends_a_chat_stream_with_an_error_never_stop(
    emulator: Server, gateway: Server
) -> None:
    rewrites = metric(gateway, "gateway_log_rewrites_total")
    answer = _post(gateway, _body(REWRITE, True))
    assert answer.status_code == 200
    events = _events(answer)
    text, reply = _streamed_text(events), _expected(emulator, answer)
    # The draft ("[draft] " + the first half) was streamed, then the log was replaced by the
    # final text, which does not continue it: the stream says so, never "stop" on the draft.
    assert text.startswith("[draft] ") and ("[draft] " + reply).startswith(text)
    assert events[-1]["error"]["code"] == "log_rewritten", events[-1]
    assert {"done": True} not in events
    assert not [e for e in events if e.get("choices") and e["choices"][0]["finish_reason"]]
    assert metric(gateway, "gateway_log_rewrites_total") > rewrites


def _sse(answer: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of each event of a named-event SSE answer."""
    events, name = [], ""
    for line in answer.text.splitlines():
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            events.append((name, json.loads(line.removeprefix("data: "))))
    return events


def test_a_rewritten_log_fails_a_responses_stream(emulator: Server, gateway: Server) -> None:
    body = {"model": "gemma-2b", "input": QUICK + REWRITE, "stream": True, "store": False}
    answer = httpx.post(
        gateway.url + "/v1/responses", json=body, headers=AUTH, timeout=CLIENT_TIMEOUT
    )
    assert answer.status_code == 200
    events = _sse(answer)
    names = [name for name, _ in events]
    assert names[-1] == "response.failed" and "response.completed" not in names, names
    failed = events[-1][1]["response"]
    assert failed["status"] == "failed"
    assert failed["error"]["message"].startswith("log_rewritten:")


def test_a_rewritten_log_ends_a_messages_stream_with_an_error(
    emulator: Server, gateway: Server
) -> None:
    body = {
        "model": "gemma-2b",
        "max_tokens": 500,
        "stream": True,
        "messages": [{"role": "user", "content": QUICK + REWRITE}],
    }
    answer = httpx.post(
        gateway.url + "/v1/messages",
        json=body,
        headers={"x-api-key": ALICE_KEY, "anthropic-version": "2023-06-01"},
        timeout=CLIENT_TIMEOUT,
    )
    assert answer.status_code == 200
    events = _sse(answer)
    names = [name for name, _ in events]
    assert names[-1] == "error" and "message_stop" not in names, names
    assert events[-1][1]["error"]["message"].startswith("log_rewritten:")
    streamed = "".join(d["delta"].get("text", "") for n, d in events if n == "content_block_delta")
    assert streamed.startswith("[draft] ")


def test_a_rewritten_log_gives_the_final_text_when_not_streamed(
    emulator: Server, gateway: Server
) -> None:
    answer = _post(gateway, _body("tell me [[emulate:rewrite]] [[emulate:words 30]]"))
    assert answer.status_code == 200
    assert answer.json()["choices"][0]["message"]["content"] == _expected(emulator, answer)


@pytest.mark.parametrize("stream", [False, True])
def test_a_job_that_never_ends_meets_its_deadline(
    emulator: Server, gateway: Server, stream: bool
) -> None:
    answer = _post(
        gateway, _body("forever [[emulate:hang]]", stream), **{"x-stainless-timeout": "2"}
    )
    if not stream:
        assert answer.status_code == 504
        assert _error(answer)["code"] == "deadline_exceeded"
        return
    # The first words began the stream; then the deadline ends it with an error event. A
    # stream's deadline is not cut to the client's timeout: that bounds silences, which
    # keep-alives fill.
    assert answer.status_code == 200
    events = _events(answer)
    assert events[-1]["error"]["code"] == "deadline_exceeded"
    assert _deadline_in(events[-1]["error"]["message"]) == DEADLINE
    assert _streamed_text(events).strip()  # the first words came through


def test_a_very_slow_upstream_still_gives_the_whole_answer(
    emulator: Server, gateway: Server
) -> None:
    # Every call slow but under read_timeout; the job itself slow too.
    _faults(emulator, submit={"delay": 0.5}, status={"delay": 0.4, "repeat": True})
    answer = _post(gateway, _body("slowly [[emulate:words 12]] [[emulate:wps 15]]", True))
    assert answer.status_code == 200
    events = _events(answer)
    assert _streamed_text(events) == _expected(emulator, answer)
    assert events[-1] == {"done": True}


# ---------------------------------------------------------------- client disconnects


def _disconnect_after(gateway: Server, body: dict[str, Any], wait_for: str) -> str:
    """Start a request, leave once ``wait_for`` happened ('headers' or 'text'); the job id."""
    with (
        httpx.Client(timeout=CLIENT_TIMEOUT) as client,
        client.stream("POST", gateway.url + CHAT, json=body, headers=AUTH) as answer,
    ):
        if wait_for == "text":
            for line in answer.iter_lines():
                if '"content":"' in line and '"content":""' not in line:
                    break
        job_id: str = answer.headers.get("x-job-id", "")
        return job_id


def _leave_while_waiting(gateway: Server, body: dict[str, Any], emulator: Server) -> None:
    """A non-streamed (or not yet started) request: the answer has no headers before the
    job ends, so the client leaves after its job was polled a few times."""
    polled = status_requests(emulator)

    def request() -> None:
        with contextlib.suppress(httpx.HTTPError):
            httpx.post(gateway.url + CHAT, json=body, headers=AUTH, timeout=0.6)

    thread = threading.Thread(target=request)
    thread.start()
    thread.join()  # the client's timeout closes the connection before any byte came back
    assert status_requests(emulator) > polled  # the job was being polled meanwhile


@pytest.mark.parametrize("case", ["mid-stream", "queued-stream", "queued-json"])
def test_a_departed_client_takes_its_job_out_of_the_poller_at_once(
    emulator: Server, gateway: Server, case: str
) -> None:
    if case == "mid-stream":
        body = _body("long [[emulate:words 400]] [[emulate:wps 10]]", True)
        assert _disconnect_after(gateway, body, "text")
    else:
        body = _body("waiting [[emulate:queue 60]]", case == "queued-stream")
        _leave_while_waiting(gateway, body, emulator)
    state = settle(gateway)
    assert state.jobs == 0 and state.idle, state
    polled = status_requests(emulator)
    time.sleep(0.4)  # eight poll intervals
    assert status_requests(emulator) == polled  # nobody asks about the job any more
    assert in_flight(gateway).jobs == 0


# ---------------------------------------------------------------- down, circuit open, back


def _circuits_open(gateway: Server) -> float:
    """Open circuits over all accounts; the label names an account, never a token."""
    samples = metric_samples(gateway)
    labels = {
        value
        for (name, pairs), _ in samples.items()
        if name == "gateway_circuit_open"
        for _, value in pairs
    }
    assert not any("token" in label for label in labels), labels
    return sum(v for (name, _), v in samples.items() if name == "gateway_circuit_open")


def test_an_unreachable_upstream_trips_the_circuit_which_recovers(tmp_path: Path) -> None:
    port = free_port()  # nothing listens here yet
    config = _config(
        f"http://127.0.0.1:{port}",
        circuit_breaker={"failure_threshold": 3, "reset_seconds": 1.0},
    )
    with running(start_gateway(tmp_path, config)) as gateway:
        refused = _post(gateway, _body("anyone there?"))
        assert refused.status_code == 502
        assert "cannot connect" in _error(refused)["message"]
        # Three refused connections (one try and two retries) opened the circuit.
        assert _circuits_open(gateway) == 1
        fast = _post(gateway, _body("still down?"))
        assert fast.status_code == 503
        assert _error(fast)["code"] == "upstream_unavailable"
        assert int(fast.headers["retry-after"]) >= 1
        # The upstream comes back on that port; after reset_seconds a probe closes the circuit.
        args = ["emulator", "--port", str(port), "--queue-seconds", "0.1"]
        args += ["--token", ALICE_TOKEN, "--token", BOB_TOKEN]
        with running(Server(args, port, "/emulator/stats", tmp_path / "late-emulator.log")):
            time.sleep(1.1)
            back = _post(gateway, _body("back?"))
            assert back.status_code == 200, back.text
            assert _circuits_open(gateway) == 0
            assert settle(gateway).idle
