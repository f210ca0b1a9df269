"""End to end, live: a real Open WebUI drives its OpenAI connection through the gateway.

Open WebUI (4.5 GB installed) is not part of the test extra: this runs when one is installed,
in a virtualenv of its own, and ``OPEN_WEBUI_BIN`` names its ``open-webui`` script (e.g.
``python3 -m venv /tmp/owui-venv && /tmp/owui-venv/bin/pip install open-webui``), and skips
otherwise, saying so; ``test_open_webui_e2e.py`` replays the session recorded from it. Open
WebUI is started offline against this session's gateway and driven through its own HTTP API as
its web page drives it (a chat, a message id and a socket session, which makes it offer its
built-in tools): models listed, a streamed turn, a second turn, a turn stopped mid-stream,
title and follow-up generation. What reached the gateway is read from its access log.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.engine.tokens import count_tokens
from tests.e2e.conftest import job_prompt
from tests.e2e.servers import ALICE_KEY, Server, free_port, wait_ready

BIN = os.environ.get("OPEN_WEBUI_BIN", "")
pytestmark = pytest.mark.skipif(
    not (BIN and Path(BIN).exists()),
    reason="Open WebUI is not installed (set OPEN_WEBUI_BIN to its open-webui script); "
    "its recorded session is replayed by test_open_webui_e2e.py",
)


class Webui:
    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=120)
        login = {"email": "admin@localhost", "password": "admin"}
        token = self.http.post("/api/v1/auths/signin", json=login).json()["token"]
        self.http.headers["authorization"] = f"Bearer {token}"
        blank = {"title": "New Chat", "models": ["gemma-2b"], "messages": [], "history": {}}
        self.chat = self.http.post("/api/v1/chats/new", json={"chat": blank}).json()["id"]

    def turn(self, messages: list[dict[str, str]], message_id: str) -> dict[str, Any]:
        body = {
            "model": "gemma-2b",
            "messages": messages,
            "stream": True,
            "chat_id": self.chat,
            "id": message_id,
            "session_id": "test-session",
            "params": {},
            "features": {"web_search": True},
        }
        answer = self.http.post("/api/chat/completions", json=body)
        assert answer.status_code == 200, answer.text
        started: dict[str, Any] = answer.json()
        return started


@pytest.fixture(scope="module")
def webui(gateway: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webui]:
    data = tmp_path_factory.mktemp("open-webui")
    port = free_port()
    env = {
        **os.environ,
        "DATA_DIR": str(data),
        "WEBUI_AUTH": "False",
        "WEBUI_SECRET_KEY": "test-secret",
        "OPENAI_API_BASE_URL": gateway.url + "/v1",
        "OPENAI_API_KEY": ALICE_KEY,
        "ENABLE_OLLAMA_API": "False",
        "OFFLINE_MODE": "True",
        "HF_HUB_OFFLINE": "1",
        "BYPASS_EMBEDDING_AND_RETRIEVAL": "True",
        "ENABLE_VERSION_UPDATE_CHECK": "False",
        "ENABLE_CHANNELS": "True",
        "ENABLE_SUBAGENTS": "True",
        "ENABLE_WEB_SEARCH": "True",
        "WEB_SEARCH_ENGINE": "duckduckgo",
    }
    env.pop("PYTHONPATH", None)
    log = (data / "webui.log").open("wb")
    args = [BIN, "serve", "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        problem = wait_ready(process, f"http://127.0.0.1:{port}/health", 300, interval=1.0)
        if problem is not None:
            pytest.fail(f"Open WebUI {problem}: {(data / 'webui.log').read_text()[-2000:]}")
        yield Webui(f"http://127.0.0.1:{port}")
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def chat_lines(gateway: Server, after: int) -> list[dict[str, Any]]:
    """The gateway's access-log lines for chat completions, from line ``after`` on."""
    lines = []
    for line in gateway.output().splitlines()[after:]:
        if line.startswith("{") and '"gateway.access"' in line:
            entry = json.loads(line)
            if entry.get("route") == "/v1/chat/completions":
                lines.append(entry)
    return lines


def wait_for(gateway: Server, after: int, count: int, limit: float = 120) -> list[dict[str, Any]]:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        lines = chat_lines(gateway, after)
        if len(lines) >= count:
            return lines
        time.sleep(0.5)
    raise AssertionError(f"Open WebUI's requests did not reach the gateway: {lines}")


def test_a_session_through_the_gateway(webui: Webui, gateway: Server, emulator: Server) -> None:
    models = webui.http.get("/api/models").json()["data"]
    assert "gemma-2b" in [m["id"] for m in models]
    start = len(gateway.output().splitlines())
    first = [{"role": "user", "content": "Name three colours."}]
    webui.turn(first, "m1")
    (turn,) = wait_for(gateway, start, 1)
    assert turn["status"] == 200 and turn["stream"] is True
    prompt = job_prompt(emulator, turn["job_ids"][0])
    assert "Name three colours." in prompt and count_tokens(prompt) <= 8192 - 1024
    second = [
        *first,
        {"role": "assistant", "content": "Red, green and blue."},
        {"role": "user", "content": "And three more?"},
    ]
    webui.turn(second, "m2")
    turns = wait_for(gateway, start, 2)
    assert turns[1]["status"] == 200
    assert "Red, green and blue." in job_prompt(emulator, turns[1]["job_ids"][0])
    story = "A long story. [[emulate:words 400]] [[emulate:wps 20]]"
    started = webui.turn([*second, {"role": "user", "content": story}], "m3")
    time.sleep(2)
    for task in started.get("task_ids", []):
        assert webui.http.post(f"/api/tasks/stop/{task}").status_code == 200
    stopped = wait_for(gateway, start, 3)[2]
    assert stopped["status"] == 499 and stopped["outcome"] == "abandoned"
    after = [*first, {"role": "assistant", "content": "Red, green and blue."}]
    for task in ("title", "follow_up"):
        body = {"model": "gemma-2b", "messages": after, "chat_id": webui.chat}
        answer = webui.http.post(f"/api/v1/tasks/{task}/completions", json=body)
        assert answer.status_code == 200, answer.text
        assert answer.json()["object"] == "chat.completion"


CHROMIUM = os.environ.get("GATEWAY_TEST_CHROMIUM", "/usr/bin/chromium")


def streamed_turns(
    gateway: Server, after: int, emulator: Server
) -> list[tuple[dict[str, Any], str]]:
    return [
        (line, job_prompt(emulator, line["job_ids"][0]))
        for line in chat_lines(gateway, after)
        if line.get("stream") and line["job_ids"]
    ]


def wait_until(check: Any, what: str, limit: float = 120) -> Any:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"not seen in {limit:g}s: {what}")


def test_the_web_page_drives_the_connection(
    webui: Webui, gateway: Server, emulator: Server
) -> None:
    """Open WebUI's own page in Chromium: a chat, the next turn, stop, title and follow-ups."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in [test]")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no browser: {CHROMIUM} is missing")
    from gateway.emulator.directives import reply_for

    start = len(gateway.output().splitlines())
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        page = browser.new_page()
        page.goto(webui.url + "/?model=gemma-2b")
        page.locator("#chat-input").wait_for(timeout=60_000)
        page.keyboard.press("Escape")  # a first visit's "what's new" dialog

        def say(text: str) -> None:
            page.locator("#chat-input").click()
            page.keyboard.type(text)
            page.keyboard.press("Enter")

        say("Name three colours.")
        (turn, prompt), *_ = wait_until(
            lambda: streamed_turns(gateway, start, emulator), "the first turn"
        )
        assert turn["status"] == 200 and "Name three colours." in prompt
        assert count_tokens(prompt) <= 8192 - 1024  # 36+ tools, fitted
        assert turn["ignored_fields"] and turn["ignored_fields"][0].startswith("tools:")
        answer = " ".join(reply_for(prompt).split()[:3])
        page.get_by_text(answer).first.wait_for(timeout=60_000)
        tasks = wait_until(
            lambda: (
                [
                    p
                    for line in chat_lines(gateway, start)
                    if not line.get("stream") and line["job_ids"]
                    for p in [job_prompt(emulator, line["job_ids"][0])]
                    if "<chat_history>" in p
                ]
                if len(chat_lines(gateway, start)) >= 3
                else None
            ),
            "title and follow-up generation",
        )
        assert any("concise title" in p for p in tasks)
        wait_until(
            lambda: any(
                "useful messages" in job_prompt(emulator, line["job_ids"][0])
                for line in chat_lines(gateway, start)
                if not line.get("stream") and line["job_ids"]
            ),
            "follow-up generation",
        )

        say("And three more?")
        second = wait_until(
            lambda: [p for _, p in streamed_turns(gateway, start, emulator) if "three more" in p],
            "the second turn",
        )
        assert "Name three colours." in second[0]

        say("A long story, please. [[emulate:words 400]] [[emulate:wps 10]]")
        wait_until(
            lambda: (
                [p for _, p in streamed_turns(gateway, start, emulator) if "long story" in p]
                or page.locator('button[aria-label="Stop"]').count()
            ),
            "the long answer starting",
        )
        stop = page.locator('button[aria-label="Stop"]').first
        stop.wait_for(timeout=60_000)
        time.sleep(1)
        stop.click()
        stopped = wait_until(
            lambda: [line for line in chat_lines(gateway, start) if line["status"] == 499],
            "the stopped stream reaching the gateway",
        )
        assert stopped[0]["outcome"] == "abandoned"
        browser.close()
