"""What a new user trips on in the first hour, each checked against real processes (issue 19).

The access line on every route, start-up and CLI messages, reload logging, the headers that
keep the SDKs from retrying what cannot succeed, and OpenAI's error ``type`` strings.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from gateway.cli import build_parser
from tests.e2e.conftest import emulator_stats
from tests.e2e.servers import (
    ALICE_KEY,
    Server,
    free_port,
    gateway_config,
    running,
    start_gateway,
)

ADMIN_KEY = "admin-key-for-first-hour-tests"
INVALID_JSON = '[[emulate:json {"a": 1} style=invalid]] [[emulate:queue 0]]'


def log_entries(server: Server) -> list[dict[str, Any]]:
    entries = []
    for line in server.output().splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:  # not JSON (a line being written)
            continue
    return entries


def eventually(check: Callable[[], bool], limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def access_line(server: Server, request_id: str) -> dict[str, Any]:
    def found() -> list[dict[str, Any]]:
        return [
            e
            for e in log_entries(server)
            if e.get("logger") == "gateway.access" and e.get("request_id") == request_id
        ]

    eventually(lambda: bool(found()))
    (entry,) = found()
    return entry


@pytest.fixture(scope="module")
def admin_gateway(emulator: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    config = gateway_config(emulator.url, admin={"key": ADMIN_KEY})
    with running(start_gateway(tmp_path_factory.mktemp("first-hour"), config)) as server:
        yield server


def config_path(server: Server) -> Path:
    args = server.process.args
    assert isinstance(args, list)
    return Path(str(args[args.index("--config") + 1]))


# --- the access line --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status", "route"),
    [
        ("GET", "/v1/models", 200, "/v1/models"),
        ("GET", "/v1/models/gemma-2b", 200, "/v1/models/{model:path}"),
        ("GET", "/no/such/page", 404, "(unknown route)"),
        ("POST", "/openapi.json", 405, "/openapi.json"),
        ("GET", "/v1/embeddings", 404, "/v1/{rest:path}"),
        ("GET", "/admin/usage", 403, "/admin/usage"),  # a gateway key, not an admin one
        ("GET", "/v1/usage", 200, "/v1/usage"),
    ],
)
def test_every_route_writes_the_access_line(
    admin_gateway: Server, method: str, path: str, status: int, route: str
) -> None:
    answer = httpx.request(
        method, admin_gateway.url + path, headers={"Authorization": f"Bearer {ALICE_KEY}"}
    )
    assert answer.status_code == status
    entry = access_line(admin_gateway, answer.headers["x-request-id"])
    assert (entry["route"], entry["status"], entry["method"]) == (route, status, method)
    assert entry["duration_ms"] >= 0
    assert ALICE_KEY not in json.dumps(entry)


def test_a_completion_still_writes_one_line_not_two(admin_gateway: Server) -> None:
    answer = httpx.post(
        admin_gateway.url + "/v1/chat/completions",
        json={"model": "gemma-2b", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {ALICE_KEY}"},
        timeout=30,
    )
    assert answer.status_code == 200
    entry = access_line(admin_gateway, answer.headers["x-request-id"])  # exactly one
    assert entry["key"] == "alice" and entry["job_ids"] == [answer.headers["x-job-id"]]


# --- reloads ----------------------------------------------------------------------------------


def admin_lines(server: Server) -> list[dict[str, Any]]:
    return [e for e in log_entries(server) if e.get("logger") == "gateway.admin"]


def test_reloads_are_logged_and_a_failed_one_without_a_traceback(admin_gateway: Server) -> None:
    path = config_path(admin_gateway)
    good = path.read_text()
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    before = len(admin_lines(admin_gateway))
    reloaded = httpx.post(admin_gateway.url + "/admin/reload", headers=admin)
    assert reloaded.status_code == 200
    eventually(lambda: len(admin_lines(admin_gateway)) == before + 1)
    ok = admin_lines(admin_gateway)[-1]
    assert (ok["level"], ok["message"].split(":")[0]) == ("info", "config reloaded")

    config = yaml.safe_load(good)
    config["keys"][1].pop("upstream_token")
    path.write_text(yaml.safe_dump(config))
    try:
        refused = httpx.post(admin_gateway.url + "/admin/reload", headers=admin)
        assert refused.status_code == 400
        eventually(lambda: len(admin_lines(admin_gateway)) == before + 2)
        failed = admin_lines(admin_gateway)[-1]
        assert failed["level"] == "error"
        assert "keys[bob].upstream_token: Field required" in failed["message"]

        admin_gateway.process.send_signal(signal.SIGHUP)
        eventually(lambda: len(admin_lines(admin_gateway)) == before + 3)
        hup = admin_lines(admin_gateway)[-1]
        assert hup["level"] == "error" and "SIGHUP" in hup["message"]
        assert "keys[bob].upstream_token" in hup["message"]
        assert "exc_info" not in hup and "Traceback" not in admin_gateway.output()
    finally:
        path.write_text(good)


# --- answers the SDKs must not retry; OpenAI's error types ----------------------------------------


def test_an_answer_that_failed_its_retries_is_not_retried_by_the_sdk(
    gateway: Server, emulator: Server
) -> None:
    before = int(emulator_stats(emulator)["jobs_created"])  # type: ignore[call-overload]
    sdk = openai.OpenAI(base_url=gateway.url + "/v1", api_key=ALICE_KEY, max_retries=2)
    with pytest.raises(openai.APIStatusError) as caught:
        sdk.chat.completions.create(
            model="gemma-2b",
            messages=[{"role": "user", "content": INVALID_JSON}],
            response_format={"type": "json_object"},
        )
    error = caught.value
    assert (error.status_code, error.code) == (502, "invalid_json_output")
    assert error.response.headers["x-should-retry"] == "false"
    job_ids = error.response.headers["x-job-id"].split(",")
    assert len(job_ids) == 3 == len(set(job_ids))  # the first try and the gateway's 2 retries
    created = int(emulator_stats(emulator)["jobs_created"])  # type: ignore[call-overload]
    assert created - before == 3  # not 9: the SDK did not ask again


def test_a_streamed_answer_lists_every_job_it_asked_for(emulator: Server, tmp_path: Path) -> None:
    # The answer is held until its JSON is checked, unless a keep-alive must go first (it
    # commits the 200): on a loaded machine three tries outlast the usual 1 s, so not here.
    config = gateway_config(emulator.url, limits={"keepalive_interval": 30.0})
    before = int(emulator_stats(emulator)["jobs_created"])  # type: ignore[call-overload]
    body = {
        "model": "gemma-2b",
        "stream": True,
        "messages": [{"role": "user", "content": INVALID_JSON}],
        "response_format": {"type": "json_object"},
    }
    with running(start_gateway(tmp_path, config)) as gateway:
        answer = httpx.post(
            gateway.url + "/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {ALICE_KEY}"},
            timeout=30,
        )
    assert answer.status_code == 502
    assert answer.headers["x-should-retry"] == "false"
    created = int(emulator_stats(emulator)["jobs_created"])  # type: ignore[call-overload]
    assert len(set(answer.headers["x-job-id"].split(","))) == created - before


def test_error_types_are_openais(gateway: Server) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        openai.OpenAI(base_url=gateway.url + "/v1", api_key="sk-wrong-key-000").models.list()
    body = caught.value.body
    assert isinstance(body, dict)
    assert (body["type"], body["code"]) == ("invalid_request_error", "invalid_api_key")


# --- start-up and the command line --------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=60
    )


def test_a_port_in_use_is_one_line_and_exit_status_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_cli("serve", "--port", str(port))
    assert done.returncode == 2
    assert done.stderr == f"gateway: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    assert done.stdout == ""


def test_version_and_help() -> None:
    from gateway import __version__

    assert run_cli("--version").stdout == f"gateway {__version__}\n"
    top = build_parser().format_help()
    assert "``" not in top and ":func:" not in top
    sub = build_parser()._subparsers
    assert sub is not None
    (choices,) = [a for a in sub._group_actions if hasattr(a, "choices")]
    emulator = choices.choices["emulator"]  # type: ignore[index]
    for action in emulator._actions:
        assert action.help, f"gateway emulator {action.option_strings} has no help"


def test_uvicorn_start_and_stop_lines_are_written_once(tmp_path: Path) -> None:
    """The demo embeds the emulator's own uvicorn server; its lines must not repeat ours."""
    port = free_port()
    server = Server(["serve", "--port", str(port)], port, "/healthz", tmp_path / "demo.log")
    assert server.stop() == 0
    messages = [e.get("message", "") for e in log_entries(server)]
    for line in ("Started server process", "Shutting down", "Finished server process"):
        assert sum(m.startswith(line) for m in messages) == 1, (line, messages)
