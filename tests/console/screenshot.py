"""Take the README's screenshot of the console: ``python -m tests.console.screenshot [PATH]``.

Starts the emulator and a gateway on loopback, streams one answer in the playground with
Debian's Chromium, and saves the page (default ``docs/console.png``).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

from tests.console.conftest import CHROMIUM
from tests.console.pages import sign_in
from tests.e2e.servers import ALICE_KEY, gateway_config, running, start_emulator, start_gateway

PROMPT = (
    "[[emulate:reply The gateway turns each chat request into one job on the grid, follows "
    "its log with one status request per tick for every job of the account, and streams the "
    "new text as it appears.]] How does the gateway stream?"
)


def main(out: Path) -> None:
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        with (
            running(start_emulator(tmp)) as emulator,
            running(start_gateway(tmp, gateway_config(emulator.url))) as gateway,
            sync_playwright() as playwright,
        ):
            browser = playwright.chromium.launch(executable_path=CHROMIUM)
            page = browser.new_page(
                base_url=gateway.url, viewport={"width": 1280, "height": 820}, color_scheme="light"
            )
            sign_in(page, ALICE_KEY, "Playground")
            page.get_by_label("System prompt", exact=True).fill("Answer in one paragraph.")
            page.get_by_label("Max tokens", exact=True).fill("256")
            page.get_by_label("Message", exact=True).fill(PROMPT)
            page.get_by_role("button", name="Send").click()
            state = page.locator("#pg-state")
            expect(state).to_have_attribute("data-state", "done", timeout=20_000)
            page.get_by_role("button", name="Copy as Python").click()
            page.screenshot(path=str(out), full_page=False)
            browser.close()
    print(f"saved {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/console.png"))
