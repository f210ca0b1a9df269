"""Usage charts whose numbers match the API, the CSV export, the live view, phones and dark."""

from __future__ import annotations

import csv
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import openai
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.console.conftest import ADMIN_KEY, CACHED_MODEL
from tests.console.pages import sign_in
from tests.e2e.servers import ALICE_KEY, BOB_KEY, Server


def today() -> str:
    return datetime.now(UTC).date().isoformat()


def settled_usage(gateway: Server, path: str, key: str, **params: str) -> list[dict[str, int]]:
    """The usage report once the ledger has written everything (two equal readings)."""
    auth = {"authorization": f"Bearer {key}"}
    previous = None
    for _ in range(50):
        rows = httpx.get(gateway.url + path, params=params, headers=auth).json()["data"]
        if rows and rows == previous:
            return list(rows)
        previous = rows
        time.sleep(0.2)
    raise AssertionError(f"usage never settled: {previous}")


def chat(gateway: Server, key: str, model: str, text: str) -> None:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key)
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}])


def test_my_usage_chart_matches_v1_usage(page: Page, console_gateway: Server) -> None:
    chat(console_gateway, ALICE_KEY, "gemma-2b", "[[emulate:words 7]] one")
    chat(console_gateway, ALICE_KEY, "llama2-uncensored", "[[emulate:words 5]] two")
    rows = settled_usage(console_gateway, "/v1/usage", ALICE_KEY, since="today")
    sign_in(page, ALICE_KEY, "Playground")
    page.get_by_role("link", name="Usage").click()
    bar = page.locator(f"svg.barchart g.bar[data-label='{today()}']")
    expect(bar).to_have_attribute("data-value", str(sum(r["total_tokens"] for r in rows)))
    for row in rows:
        segment = bar.locator("rect title", has_text=f"· {row['model']}:")
        tokens = row["total_tokens"]
        expect(segment).to_have_text(f"{today()[5:]} · {row['model']}: {tokens:,} tokens")
    page.get_by_label("Show", exact=True).select_option("requests")
    expect(bar).to_have_attribute("data-value", str(sum(r["requests"] for r in rows)))
    limits = page.get_by_role("region", name="Limits and budgets")
    expect(limits).to_contain_text("Requests per minute")
    expect(limits).to_contain_text("no limit")


def test_my_usage_shows_the_tokens_the_cache_saved(page: Page, console_gateway: Server) -> None:
    for _ in range(2):  # the second is a hit: no job, its tokens saved
        chat(console_gateway, ALICE_KEY, CACHED_MODEL, "[[emulate:words 9]] cached question")
    rows = settled_usage(console_gateway, "/v1/usage", ALICE_KEY, since="today")
    saved = sum(r["tokens_saved"] for r in rows)
    assert saved > 0 and sum(r["cached"] for r in rows) >= 1
    sign_in(page, ALICE_KEY, "Playground")
    page.get_by_role("link", name="Usage").click()
    summary = page.locator("#usage-summary")
    expect(summary).to_have_attribute("data-saved", str(saved))
    expect(summary).to_contain_text(f"{saved:,} tokens saved by the cache")


def test_admin_usage_by_model_exports_the_same_numbers_as_csv(
    page: Page, console_gateway: Server
) -> None:
    chat(console_gateway, BOB_KEY, "gemma-2b", "[[emulate:words 4]] three")
    since = (datetime.now(UTC).date() - timedelta(days=6)).isoformat()
    rows = settled_usage(console_gateway, "/admin/usage", ADMIN_KEY, since=since)
    by_model: dict[str, int] = {}
    for row in rows:
        by_model[row["model"]] = by_model.get(row["model"], 0) + row["total_tokens"]
    sign_in(page, ADMIN_KEY, "Usage")
    page.get_by_label("Group by", exact=True).select_option("model")
    for model, tokens in by_model.items():
        bar = page.locator(f"svg.barchart g.bar[data-label='{model}']")
        expect(bar).to_have_attribute("data-value", str(tokens))
    with page.expect_download() as download:
        page.get_by_role("button", name="Export CSV").click()
    path = download.value.path()
    with open(path, newline="", encoding="utf-8") as handle:
        table = list(csv.DictReader(handle))
    assert {r["Model"]: int(r["Total tokens"]) for r in table} == by_model


@pytest.fixture
def long_stream(console_gateway: Server) -> Iterator[dict[str, str]]:
    """A streamed completion for bob running in the background; yields once its job is known."""
    seen: dict[str, str] = {}
    ready, stop = threading.Event(), threading.Event()

    def run() -> None:
        body = {
            "model": "gemma-2b",
            "stream": True,
            "messages": [{"role": "user", "content": "[[emulate:words 200]] [[emulate:wps 10]]"}],
        }
        auth = {"authorization": f"Bearer {BOB_KEY}"}
        url = console_gateway.url + "/v1/chat/completions"
        with httpx.stream("POST", url, json=body, headers=auth, timeout=30) as response:
            if "x-job-id" not in response.headers:  # said in the failure, not lost in a thread
                seen["problem"] = f"{response.status_code} {response.read()[:300]!r}"
                ready.set()
                return
            seen["job_id"] = response.headers["x-job-id"]
            ready.set()
            for _ in response.iter_bytes():
                if stop.is_set():
                    break

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    assert ready.wait(10), "the stream did not start"
    assert "problem" not in seen, f"the stream was refused: {seen.get('problem')}"
    yield seen
    stop.set()
    worker.join(10)


def test_live_view_shows_a_job_in_flight(page: Page, long_stream: dict[str, str]) -> None:
    sign_in(page, ADMIN_KEY, "Usage")
    page.get_by_role("link", name="Live").click()
    jobs = page.get_by_role("table", name="Jobs in flight")
    row = jobs.locator("tr", has_text=long_stream["job_id"])
    expect(row).to_contain_text("bob")
    expect(row).to_contain_text("generating")
    accounts = page.get_by_role("table", name="Accounts")
    expect(accounts.locator("tr", has_text="bob")).to_contain_text("closed")
    expect(page.get_by_label("Upstream", exact=True)).to_contain_text("Upstream latency p50")


def test_readable_on_a_phone_and_dark(browser: Browser, console_gateway: Server) -> None:
    context = browser.new_context(
        base_url=console_gateway.url, viewport={"width": 390, "height": 844}, color_scheme="dark"
    )
    try:
        page = context.new_page()
        sign_in(page, ALICE_KEY, "Playground")
        for name in ("Playground", "Usage"):
            page.get_by_role("link", name=name).click()
            expect(page.get_by_role("heading", name=name, level=1)).to_be_visible()
            overflow = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, f"{name} scrolls sideways on a phone by {overflow}px"
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        red, green, blue = (int(x) for x in background[4:-1].split(",")[:3])
        assert red + green + blue < 200, background
    finally:
        context.close()
