"""The playground in a real browser: sign in, stream, see the job's states, stop, no HTML."""

from __future__ import annotations

import re
import time

import httpx
from playwright.sync_api import Page, expect

from tests.console.conftest import ADMIN_KEY
from tests.console.pages import sign_in
from tests.e2e.servers import ALICE_KEY, Server

# Queued for 3 s: the first keep-alive comes 1 s after submission, with room for a loaded machine.
QUEUED_LONG = "[[emulate:queue 3]] [[emulate:words 24]] [[emulate:wps 12]] Tell me a story."


def read_answer(page: Page) -> tuple[int, str]:
    """The answer's length and the job's state, read in one go."""
    length, state = page.evaluate(
        "[document.getElementById('pg-answer').textContent.length,"
        " document.getElementById('pg-state').dataset.state]"
    )
    return int(length), str(state)


def send(page: Page, text: str) -> None:
    page.get_by_label("Model", exact=True).select_option("gemma-2b")
    page.get_by_label("Message", exact=True).fill(text)
    page.get_by_role("button", name="Send").click()


def test_an_answer_streams_in_after_the_queued_state(page: Page) -> None:
    sign_in(page, ALICE_KEY, "Playground")
    # The key is in this tab's session storage only: no cookie, no local storage, no URL.
    assert page.evaluate("sessionStorage.getItem('gateway-console-key')") == ALICE_KEY
    assert page.evaluate("document.cookie + localStorage.length") == "0"
    assert ALICE_KEY not in page.url
    state = page.locator("#pg-state")
    answer = page.get_by_role("region", name="Answer")
    send(page, QUEUED_LONG)
    expect(state).to_have_attribute("data-state", "queued", timeout=5000)
    expect(answer).to_have_text("")
    expect(page.locator("#pg-job")).to_have_text(re.compile(r"^[0-9a-f]{8,}"))
    expect(state).to_have_attribute("data-state", "generating", timeout=10_000)
    # The text grows while the job still generates: two readings, each with the state at once.
    first = read_answer(page)
    deadline = time.monotonic() + 5
    later = first
    while later[0] <= first[0] and time.monotonic() < deadline:
        time.sleep(0.05)
        later = read_answer(page)
    assert first[1] == later[1] == "generating"
    assert 0 < first[0] < later[0]
    expect(state).to_have_attribute("data-state", "done", timeout=15_000)
    words = answer.inner_text().split()
    assert len(words) == 24
    expect(page.locator("#pg-ttft")).to_have_text(re.compile(r"^\d+ ms$"))
    expect(page.locator("#pg-tokens")).to_have_text(re.compile(r"\d+ prompt \+ \d+ completion"))


def live_jobs(gateway: Server) -> list[str]:
    auth = {"authorization": f"Bearer {ADMIN_KEY}"}
    answer = httpx.get(gateway.url + "/admin/live", headers=auth)
    answer.raise_for_status()
    return [job["job_id"] for job in answer.json()["jobs"]]


def test_stop_ends_the_stream_and_the_gateway_drops_the_job(
    page: Page, console_gateway: Server
) -> None:
    sign_in(page, ALICE_KEY, "Playground")
    answer = page.get_by_role("region", name="Answer")
    send(page, "[[emulate:queue 0]] [[emulate:words 400]] [[emulate:wps 8]] Go on for a while.")
    expect(page.locator("#pg-state")).to_have_attribute("data-state", "generating", timeout=10_000)
    job = page.locator("#pg-job").inner_text()
    assert job in live_jobs(console_gateway)
    page.get_by_role("button", name="Stop").click()
    expect(page.locator("#pg-state")).to_have_attribute("data-state", "stopped")
    stopped_at = answer.inner_text()
    deadline = time.monotonic() + 5
    while job in live_jobs(console_gateway) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert job not in live_jobs(console_gateway)
    page.wait_for_timeout(600)
    assert answer.inner_text() == stopped_at
    assert len(stopped_at.split()) < 400
    expect(page.get_by_role("button", name="Send")).to_be_enabled()


HOSTILE = '<img src=x onerror="window.__pwned=1"> and <script>window.__pwned=2</script> end'


def test_model_output_is_shown_as_text_never_as_html(page: Page) -> None:
    sign_in(page, ALICE_KEY, "Playground")
    send(page, f"[[emulate:reply {HOSTILE}]]")
    expect(page.locator("#pg-state")).to_have_attribute("data-state", "done", timeout=10_000)
    answer = page.get_by_role("region", name="Answer")
    expect(answer).to_have_text(HOSTILE)
    assert page.locator("main img, main script").count() == 0
    assert page.evaluate("window.__pwned") is None
    turns = page.get_by_role("list", name="Conversation").locator("li")
    expect(turns).to_have_count(2)
    expect(turns.nth(1)).to_contain_text(HOSTILE)


def test_copy_as_code_reads_the_key_from_the_environment(page: Page) -> None:
    sign_in(page, ALICE_KEY, "Playground")
    page.get_by_label("Message", exact=True).fill("Hello there")
    code = page.get_by_label("Request code")
    for button, marker in (
        ("Copy as curl", "curl -N"),
        ("Copy as Python", "from openai import OpenAI"),
        ("Copy as JavaScript", 'import OpenAI from "openai"'),
    ):
        page.get_by_role("button", name=button).click()
        expect(code).to_contain_text(marker)
        text = code.inner_text()
        assert "/v1" in text and "Hello there" in text and "GATEWAY_API_KEY" in text
        assert ALICE_KEY not in text


WEATHER_TOOL = (
    '[{"type": "function", "function": {"name": "get_weather", "parameters": '
    '{"type": "object", "properties": {"city": {"type": "string"}}}}}]'
)


def test_tools_stream_as_tool_calls_and_bad_json_is_refused_in_the_page(page: Page) -> None:
    sign_in(page, ALICE_KEY, "Playground")
    page.get_by_text("Tools and JSON schema").click()
    page.get_by_label("JSON schema for the answer", exact=True).fill("{not json")
    send(page, "hello")
    expect(page.get_by_role("alert").filter(has_text="not valid JSON")).to_be_visible()
    expect(page.locator("#pg-state")).to_have_attribute("data-state", "idle")
    page.get_by_label("JSON schema for the answer", exact=True).fill("")
    page.get_by_label("Tools (JSON array of function tools)", exact=True).fill(WEATHER_TOOL)
    send(page, '[[emulate:tool get_weather {"city": "Paris"}]] Weather in Paris?')
    expect(page.locator("#pg-state")).to_have_text("done (tool_calls)", timeout=10_000)
    calls = page.get_by_label("Tool calls", exact=True)
    expect(calls).to_contain_text('"name": "get_weather"')
    expect(calls).to_contain_text("Paris")


def test_a_wrong_key_is_refused_and_nothing_is_kept(page: Page) -> None:
    page.goto("/")
    page.get_by_label("API key", exact=True).fill("sk-not-a-key-at-all")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert").filter(has_text="not accepted")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0
    expect(page.get_by_role("navigation")).to_be_hidden()
