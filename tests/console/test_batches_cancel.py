"""The Batches page while batches run: a Cancel button per running batch (the key's own
through its door's cancel, any key's for an admin of the ``admin`` role through
``POST /admin/batches/{id}/cancel``), and the list read again every two seconds until every
batch shown has ended, without a click on Refresh.

A gateway of this module's own runs two lines of a key at once (``batches.lines_in_flight``),
so a batch of slow lines is still running when the page is opened.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from playwright.sync_api import Page, expect

from tests.console.conftest import ACCOUNT, ADMIN_KEY, ROLES, VIEWER_KEY, Recorder, admin_section
from tests.console.pages import sign_in
from tests.e2e.servers import (
    ALICE_KEY,
    ALICE_TOKEN,
    BOB_KEY,
    Server,
    gateway_config,
    running,
    start_gateway,
)

SLOW = "[[emulate:words 10]] [[emulate:wps 10]] a line"  # about a second each
LINES = 40  # some twenty seconds at two at once: still running when the page opens
WAIT = 30_000  # ms: Playwright's patience for what the page shows next


@pytest.fixture(scope="module")
def console_gateway(
    console_emulator: Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """This module's gateway (the browser's ``context`` follows it): few lines at once."""
    tmp = tmp_path_factory.mktemp("console-cancel")
    config = gateway_config(
        console_emulator.url,
        admin=admin_section(),
        ledger={"url": f"sqlite:///{tmp / 'usage.db'}", "batch_size": 1},
        batches={"lines_in_flight": 2, "scan_interval": 0.2},
    )
    if ROLES:
        config["accounts"] = [{"name": ACCOUNT, "upstream_token": ALICE_TOKEN}]
    with running(start_gateway(tmp, config)) as server:
        yield server


def _openai_batch(gateway: Server, key: str) -> str:
    api = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
    lines = [
        {"custom_id": f"s{i}", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": "gemma-2b", "messages": [{"role": "user", "content": SLOW}]}}
        for i in range(LINES)
    ]  # fmt: skip
    content = "".join(json.dumps(x) + "\n" for x in lines).encode()
    uploaded = api.files.create(file=("slow.jsonl", content), purpose="batch")
    made = api.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    return made.id


def _message_batch(gateway: Server, key: str) -> str:
    api = anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0)
    params: Any = {"model": "gemma-2b", "max_tokens": 64,
                   "messages": [{"role": "user", "content": SLOW}]}  # fmt: skip
    made = api.messages.batches.create(
        requests=[{"custom_id": f"m{i}", "params": params} for i in range(LINES)]
    )
    return made.id


def _batch_reads(recorder: Recorder) -> int:
    return sum("/v1/batches?" in url or "/admin/batches?" in url for url in recorder.urls)


def test_a_key_cancels_its_running_batches_and_the_page_follows_them(
    page: Page, console_gateway: Server, recorder: Recorder
) -> None:
    batch_id = _openai_batch(console_gateway, ALICE_KEY)
    message_id = _message_batch(console_gateway, ALICE_KEY)
    sign_in(page, ALICE_KEY, "Playground")
    page.get_by_role("link", name="Batches").click()
    row = page.locator("#batches-table tr", has_text=batch_id)
    messages = page.locator("#batches-table tr", has_text=message_id)
    expect(messages).to_contain_text("in_progress")
    row.get_by_role("button", name="Cancel").click()
    messages.get_by_role("button", name="Cancel").click()
    # Followed without a click on Refresh: cancelling, then cancelled once the lines in
    # flight end (Anthropic's processing_status: canceling, then ended).
    expect(row.locator("td").nth(2)).to_have_text("cancelled", timeout=WAIT)
    expect(messages.locator("td").nth(2)).to_have_text("ended", timeout=WAIT)
    expect(page.get_by_role("button", name="Cancel")).to_have_count(0)
    api = openai.OpenAI(base_url=console_gateway.url + "/v1", api_key=ALICE_KEY, max_retries=0)
    done = api.batches.retrieve(batch_id)
    assert done.status == "cancelled" and done.request_counts is not None
    assert done.request_counts.completed < LINES
    claude = anthropic.Anthropic(base_url=console_gateway.url, api_key=ALICE_KEY, max_retries=0)
    ended = claude.messages.batches.retrieve(message_id)
    assert ended.processing_status == "ended" and ended.request_counts.canceled > 0
    # Every batch shown has ended: the page stops reading them.
    reads = _batch_reads(recorder)
    page.wait_for_timeout(2500)  # longer than the two seconds between reads
    assert _batch_reads(recorder) == reads


@pytest.mark.skipif(not ROLES, reason="this gateway has no admin roles")
def test_an_admin_cancels_any_keys_batch_and_a_viewer_cannot(
    page: Page, console_gateway: Server
) -> None:
    batch_id = _openai_batch(console_gateway, BOB_KEY)
    url = f"{console_gateway.url}/admin/batches/{batch_id}/cancel"
    for key, code in ((VIEWER_KEY, "read_only_admin_key"), (BOB_KEY, "admin_key_required")):
        refused = httpx.post(url, headers={"authorization": f"Bearer {key}"})
        assert (refused.status_code, refused.json()["error"]["code"]) == (403, code), refused.text
    sign_in(page, VIEWER_KEY, "Usage")
    page.get_by_role("link", name="Batches").click()
    row = page.locator("#batches-table tr", has_text=batch_id)
    expect(row).to_contain_text("bob")
    expect(row.get_by_role("button", name="Cancel")).to_have_count(0)
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, ADMIN_KEY, "Usage")
    page.get_by_role("link", name="Batches").click()
    row.get_by_role("button", name="Cancel").click()
    expect(row.locator("td").nth(3)).to_have_text("cancelled", timeout=WAIT)  # after Key
    api = openai.OpenAI(base_url=console_gateway.url + "/v1", api_key=BOB_KEY, max_retries=0)
    assert api.batches.retrieve(batch_id).status == "cancelled"
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    again = httpx.post(url, headers=admin)  # already cancelled: answered as it is
    assert again.status_code == 200 and again.json()["status"] == "cancelled"
    missing = httpx.post(url.replace(batch_id, "batch_nope"), headers=admin)
    assert missing.status_code == 404, missing.text
