"""The Batches page: a key's batches with their progress and downloads; an admin sees all."""

from __future__ import annotations

import json
import time
from pathlib import Path

import openai
from playwright.sync_api import Page, expect

from tests.console.conftest import ADMIN_KEY
from tests.console.pages import sign_in
from tests.e2e.servers import ALICE_KEY, Server


def _finished_batch(gateway: Server) -> tuple[str, bytes]:
    api = openai.OpenAI(base_url=gateway.url + "/v1", api_key=ALICE_KEY, max_retries=0)
    lines = [
        {"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": "gemma-2b", "messages": [{"role": "user", "content": f"hi {i}"}]}}
        for i in range(3)
    ]  # fmt: skip
    content = "".join(json.dumps(x) + "\n" for x in lines).encode()
    uploaded = api.files.create(file=("in.jsonl", content), purpose="batch")
    batch = api.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    for _ in range(200):
        batch = api.batches.retrieve(batch.id)
        if batch.status == "completed":
            break
        time.sleep(0.1)
    assert batch.status == "completed" and batch.output_file_id is not None
    return batch.id, api.files.content(batch.output_file_id).content


def test_a_key_sees_its_batches_and_downloads_the_output(
    page: Page, console_gateway: Server
) -> None:
    batch_id, output = _finished_batch(console_gateway)
    sign_in(page, ALICE_KEY, "Playground")
    page.get_by_role("link", name="Batches").click()
    expect(page.get_by_role("heading", name="Batches", level=1)).to_be_visible()
    row = page.locator("#batches-table tr", has_text=batch_id)
    expect(row).to_contain_text("completed")
    expect(row.locator("progress")).to_have_attribute("value", "3")
    with page.expect_download() as download:
        row.get_by_role("button", name="output").click()
    path = download.value.path()
    assert path is not None and Path(path).read_bytes() == output


def test_an_admin_sees_every_keys_batches(page: Page, console_gateway: Server) -> None:
    batch_id, output = _finished_batch(console_gateway)
    sign_in(page, ADMIN_KEY, "Usage")
    page.get_by_role("link", name="Batches").click()
    row = page.locator("#batches-table tr", has_text=batch_id)
    expect(row).to_contain_text("alice")
    with page.expect_download() as download:
        row.get_by_role("button", name="output").click()
    path = download.value.path()
    assert path is not None and Path(path).read_bytes() == output
