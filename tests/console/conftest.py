"""Real servers and a real browser for the console's tests.

One emulator and one gateway (with an admin key) for the module; Playwright drives Debian's
Chromium (``/usr/bin/chromium``; ``.ci/run`` installs it). Every request the browser makes is
recorded, and each test fails if one went anywhere but the gateway on 127.0.0.1. The tests
skip, saying why, when no browser can be had.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.config import AdminSettings
from tests.e2e.servers import (
    ALICE_TOKEN,
    Server,
    gateway_config,
    running,
    start_emulator,
    start_gateway,
)

CHROMIUM = os.environ.get("GATEWAY_TEST_CHROMIUM", "/usr/bin/chromium")
ADMIN_KEY = "sk-test-admin-0123456789"
VIEWER_KEY = "sk-test-viewer-0123456789"
ACCOUNT = "team-a"
#: Whether this gateway knows admin roles (issue 16's ``admin.keys``).
ROLES = "keys" in AdminSettings.model_fields

try:
    from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright
except ImportError:  # pragma: no cover - the test extra installs it
    sync_playwright = None  # type: ignore[assignment]


def admin_section() -> dict[str, Any]:
    if ROLES:
        return {
            "keys": [
                {"name": "root", "key": ADMIN_KEY, "role": "admin"},
                {"name": "auditor", "key": VIEWER_KEY, "role": "viewer"},
            ]
        }
    return {"key": ADMIN_KEY}


@pytest.fixture(scope="session")
def console_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running(start_emulator(tmp_path_factory.mktemp("console-emulator"))) as server:
        yield server


CACHED_MODEL = "gemma-cached"


@pytest.fixture(scope="session")
def console_gateway(
    console_emulator: Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("console-gateway")
    config = gateway_config(
        console_emulator.url,
        admin=admin_section(),
        ledger={"url": f"sqlite:///{tmp / 'usage.db'}", "batch_size": 1},
    )
    # A model whose answers the cache keeps, for the usage page's tokens saved.
    config["models"].append({"name": CACHED_MODEL, "tag": "gemma:2b", "cache": True})
    if ROLES:  # database keys run their jobs on a named account
        config["accounts"] = [{"name": ACCOUNT, "upstream_token": ALICE_TOKEN}]
    with running(start_gateway(tmp, config)) as server:
        yield server


# Module scope, not session: Playwright's sync API keeps an event loop running in this thread
# while it is open, and asyncio tests of later modules could not start theirs.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if sync_playwright is None:
        pytest.skip("playwright is not installed (pip install -e '.[test]')")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no browser: {CHROMIUM} is missing (apt-get install chromium)")
    with sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(executable_path=CHROMIUM)
        except Exception as exc:  # a browser that cannot start is no browser
            pytest.skip(f"no browser: {CHROMIUM} did not start ({exc})")
        yield launched
        launched.close()


class Recorder:
    """Every request the browser made, and every CSP violation or script error it reported."""

    def __init__(self) -> None:
        self.urls: list[str] = []
        self.problems: list[str] = []

    def foreign(self, origin: str) -> list[str]:
        return [u for u in self.urls if not u.startswith((origin + "/", "data:", "blob:"))]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def context(
    browser: Browser, console_gateway: Server, recorder: Recorder
) -> Iterator[BrowserContext]:
    ctx = browser.new_context(base_url=console_gateway.url, accept_downloads=True)
    ctx.on("request", lambda request: recorder.urls.append(request.url))
    ctx.on("weberror", lambda error: recorder.problems.append(f"script error: {error.error}"))
    yield ctx
    ctx.close()
    assert recorder.foreign(console_gateway.url) == [], "requests left for another origin"


@pytest.fixture
def page(context: BrowserContext, recorder: Recorder) -> Iterator[Page]:
    tab = context.new_page()

    def on_console(message: Any) -> None:
        text = message.text
        if message.type == "error" and "Content Security Policy" in text:
            recorder.problems.append(text)

    tab.on("console", on_console)
    yield tab
    assert recorder.problems == [], "the console broke its own CSP or threw"
