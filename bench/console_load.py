"""How fast the console loads from the gateway on this machine (issue 17: "well under a second").

    .venv/bin/python -m bench.console_load [--runs 20]

Starts the emulator and a gateway on 127.0.0.1, then, in Debian's Chromium, opens the console
``--runs`` times in fresh browser contexts (nothing cached) and signs in. Prints the median and
the worst of: DOMContentLoaded, the load event, and sign-in to the playground being usable
(the models listed). Also prints the bytes the page transfers.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

from tests.console.conftest import CHROMIUM
from tests.e2e.servers import ALICE_KEY, gateway_config, running, start_emulator, start_gateway


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    loaded: list[float] = []
    ready: list[float] = []
    signed: list[float] = []
    sizes: list[int] = []
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        with (
            running(start_emulator(tmp)) as emulator,
            running(start_gateway(tmp, gateway_config(emulator.url))) as gateway,
            sync_playwright() as playwright,
        ):
            browser = playwright.chromium.launch(executable_path=CHROMIUM)
            for _ in range(args.runs):
                context = browser.new_context(base_url=gateway.url)
                page = context.new_page()
                received: list[int] = []
                page.on("response", lambda r, into=received: into.append(len(r.body())))
                page.goto("/")
                timing = page.evaluate(
                    "(() => { const t = performance.getEntriesByType('navigation')[0];"
                    " return [t.domContentLoadedEventEnd, t.loadEventEnd]; })()"
                )
                ready.append(timing[0])
                loaded.append(timing[1])
                started = time.perf_counter()
                page.get_by_label("API key", exact=True).fill(ALICE_KEY)
                page.get_by_role("button", name="Sign in").click()
                expect(page.get_by_label("Model", exact=True).locator("option")).not_to_have_count(
                    0
                )
                signed.append((time.perf_counter() - started) * 1000)
                sizes.append(sum(received))
                context.close()
            browser.close()
    print(f"console load over {args.runs} cold loads (ms)      median    worst")
    for label, values in (
        ("DOMContentLoaded", ready),
        ("load event", loaded),
        ("sign in -> models listed", signed),
    ):
        print(f"  {label:<42}{statistics.median(values):8.1f} {max(values):8.1f}")
    print(f"  bytes transferred per load (page + API)   {statistics.median(sizes):8.0f}")


if __name__ == "__main__":
    main()
