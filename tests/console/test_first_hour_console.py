"""The console as a newcomer sees it (issue 27, item 9 and the demo): no error in the browser's
console at sign-in, table cells and the checkbox lined up, times in UTC everywhere, and the
quick start's demo gateway opening every page with its demo admin key."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from gateway.config import Settings
from tests.console.conftest import ADMIN_KEY, ROLES
from tests.console.pages import sign_in
from tests.e2e.servers import ALICE_KEY, Server, free_port, running

SHOTS = Path(__file__).resolve().parent


def errors_while(page: Page) -> list[str]:
    """Errors the browser reports from now on: console messages and answers of 400 or more."""
    seen: list[str] = []

    def on_console(message: Any) -> None:
        if message.type == "error":
            seen.append(f"console: {message.text}")

    page.on("console", on_console)
    page.on("response", lambda r: seen.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    return seen


@pytest.mark.parametrize("key,landing", [(ALICE_KEY, "Playground"), (ADMIN_KEY, "Usage")])
def test_signing_in_logs_no_error_in_the_browser(page: Page, key: str, landing: str) -> None:
    seen = errors_while(page)
    sign_in(page, key, landing)
    page.wait_for_load_state("networkidle")
    assert seen == []


def box(page: Page, selector: str) -> dict[str, float]:
    found = page.locator(selector).first.bounding_box()
    assert found is not None, selector
    return found


@pytest.mark.skipif(not ROLES, reason="this gateway has no admin roles (issue 16)")
def test_the_keys_table_and_its_checkbox_line_up(page: Page, tmp_path: Path) -> None:
    sign_in(page, ADMIN_KEY, "Usage")
    page.get_by_role("link", name="Keys").click()
    table = page.get_by_role("table", name="Keys")
    expect(table.locator("td.actions").first).to_be_visible()
    cells = table.locator("tr").nth(1).locator("td")
    tops = {round(cells.nth(i).bounding_box()["y"]) for i in range(cells.count())}  # type: ignore[index]
    heights = {round(cells.nth(i).bounding_box()["height"]) for i in range(cells.count())}  # type: ignore[index]
    assert len(tops) == 1 and len(heights) == 1, (tops, heights)  # one row, one bottom border
    assert cells.last.evaluate("node => getComputedStyle(node).display") == "table-cell"
    search, check = box(page, "#keys-search"), box(page, "#keys-revoked")
    middle = lambda b: b["y"] + b["height"] / 2  # noqa: E731
    assert abs(middle(search) - middle(check)) <= 2, (search, check)
    page.screenshot(path=str(tmp_path / "keys.png"), full_page=True)


@pytest.mark.skipif(not ROLES, reason="this gateway has no admin roles (issue 16)")
def test_the_live_view_says_utc_like_the_usage_page(page: Page) -> None:
    sign_in(page, ADMIN_KEY, "Usage")
    expect(page.locator("#page-usage")).to_contain_text("(UTC)")
    page.get_by_role("link", name="Live").click()
    expect(page.locator("#live-updated")).to_have_text(re.compile(r"^Updated \d\d:\d\d:\d\d UTC$"))


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``python3 dev.py serve``'s gateway: no config at all."""
    tmp = tmp_path_factory.mktemp("console-demo")
    port = free_port()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp))
        server = Server(["serve", "--port", str(port)], port, "/healthz", tmp / "demo.log")
    with running(server):
        yield server


def test_the_demo_admin_key_opens_every_page(browser: Browser, demo: Server) -> None:
    context = browser.new_context(base_url=demo.url)
    page = context.new_page()
    try:
        seen = errors_while(page)
        sign_in(page, Settings().emulator.demo_admin_key or "", "Usage")
        for name in ("Keys", "Live", "Usage"):
            page.get_by_role("link", name=name).click()
            expect(page.get_by_role("heading", name=name, level=1)).to_be_visible()
        page.get_by_role("link", name="Keys").click()
        expect(page.get_by_role("table", name="Keys")).to_contain_text("demo")
        page.wait_for_load_state("networkidle")
        assert seen == []
    finally:
        context.close()
