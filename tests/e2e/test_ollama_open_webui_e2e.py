"""Open WebUI, unchanged, with its Ollama connection pointed at the gateway, driven in Chromium.

Open WebUI is far too heavy for the test extra (PyPI ``open-webui`` pulls in torch and some
7 GB), so this test runs only when ``GATEWAY_TEST_OPEN_WEBUI`` names a virtualenv outside the
repo holding ``open-webui`` and ``playwright`` (and a Chromium is installed); it skips,
saying so, otherwise. To set one up::

    python3.11 -m venv /tmp/owui-venv
    /tmp/owui-venv/bin/pip install open-webui playwright
    GATEWAY_TEST_OPEN_WEBUI=/tmp/owui-venv pytest tests/e2e/test_ollama_open_webui_e2e.py

Open WebUI cannot send a key on an Ollama connection configured from its environment, so the
gateway serves the Ollama door on its own address with a default key (``ollama.port``,
``ollama.default_key``): the setup docs/ollama.md describes. The browser selects the model
from what ``/api/tags`` listed, sends two turns, and sees both streamed answers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.servers import (
    ALICE_KEY,
    Server,
    free_port,
    gateway_config,
    running,
    start_emulator,
    start_gateway,
    wait_ready,
)

VENV = os.environ.get("GATEWAY_TEST_OPEN_WEBUI")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(
    not VENV or not Path(VENV, "bin", "open-webui").exists() or CHROMIUM is None,
    reason="set GATEWAY_TEST_OPEN_WEBUI to a venv with open-webui and playwright (and install "
    "chromium) to drive Open WebUI against the gateway",
)

BROWSER = textwrap.dedent(
    """
    import sys, time
    from playwright.sync_api import sync_playwright

    base, chromium = sys.argv[1], sys.argv[2]

    def say(page, text, answer):
        page.locator("#chat-input").click()
        page.keyboard.type(text)
        page.keyboard.press("Enter")
        page.get_by_text(answer, exact=True).first.wait_for()  # the answer, alone
        print("answered:", answer, flush=True)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page()
        page.set_default_timeout(90_000)
        page.goto(base + "/?models=gemma:2b")
        try:
            page.get_by_text("Okay, Let's Go!").click(timeout=10_000)  # release notes
        except Exception:
            pass
        say(page, "Turn one [[emulate:reply Bonjour from the grid.]]", "Bonjour from the grid.")
        say(page, "Turn two [[emulate:reply Second answer here.]]", "Second answer here.")
        browser.close()
    """
)


@pytest.fixture(scope="module")
def ollama_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Server]]:
    tmp = tmp_path_factory.mktemp("open-webui-gateway")
    port = free_port()
    with running(start_emulator(tmp, "--queue-seconds", "1")) as emulator:
        config = gateway_config(emulator.url, ollama={"port": port, "default_key": ALICE_KEY})
        with running(start_gateway(tmp, config)) as gateway:
            yield f"http://127.0.0.1:{port}", gateway


@pytest.mark.timeout(600)
def test_open_webui_lists_the_models_and_streams_two_turns(
    ollama_url: tuple[str, Server], tmp_path: Path
) -> None:
    assert VENV is not None and CHROMIUM is not None
    url, gateway = ollama_url
    port = free_port()
    env = {
        **os.environ,
        "DATA_DIR": str(tmp_path),
        "OLLAMA_BASE_URL": url,
        "ENABLE_OPENAI_API": "False",
        "WEBUI_AUTH": "False",
        "OFFLINE_MODE": "True",
        "HF_HUB_OFFLINE": "1",
        "RAG_EMBEDDING_MODEL_AUTO_UPDATE": "False",
        "ENABLE_VERSION_UPDATE_CHECK": "False",
        "WEBUI_SECRET_KEY": "test-secret-0123456789",
    }
    log = (tmp_path / "open-webui.log").open("wb")
    webui = subprocess.Popen(
        [str(Path(VENV, "bin", "open-webui")), "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        problem = wait_ready(webui, f"http://127.0.0.1:{port}/health", 240, 1.0)
        assert problem is None, (tmp_path / "open-webui.log").read_text()[-3000:]
        token = httpx.post(
            f"http://127.0.0.1:{port}/api/v1/auths/signin",
            json={"email": "admin@localhost", "password": "admin"},
        ).json()["token"]
        listed = httpx.get(
            f"http://127.0.0.1:{port}/api/models",
            headers={"authorization": f"Bearer {token}"},
            timeout=30,
        ).json()
        assert {m["id"] for m in listed["data"]} == {"gemma:2b", "llama2-uncensored:latest"}
        script = tmp_path / "browser.py"
        script.write_text(BROWSER)
        done = subprocess.run(
            [str(Path(VENV, "bin", "python")), str(script), f"http://127.0.0.1:{port}", CHROMIUM],
            capture_output=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr.decode()[-3000:]
        assert done.stdout.decode().count("answered:") == 2
    finally:
        webui.terminate()
        webui.wait(30)
        log.close()
    access = [r for r in gateway.records() if r.get("route") == "/api/chat"]
    assert len(access) >= 2 and all(r.get("key") == "alice" for r in access)
