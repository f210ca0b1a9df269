"""Keys through the console: create one as admin and use it, revoke it, and a viewer can't.

These need the keys and teams admin API (issue 16); they skip on a gateway without it.
"""

from __future__ import annotations

import re
import secrets
import time

import httpx
import openai
import pytest
from playwright.sync_api import Dialog, Page, expect

from tests.console.conftest import ACCOUNT, ADMIN_KEY, ROLES, VIEWER_KEY
from tests.console.pages import sign_in
from tests.e2e.servers import Server

pytestmark = pytest.mark.skipif(not ROLES, reason="this gateway has no admin roles (issue 16)")


def status_with(gateway: Server, key: str) -> int:
    auth = {"authorization": f"Bearer {key}"}
    return httpx.get(gateway.url + "/v1/models", headers=auth).status_code


def until(check: object, seconds: float = 3.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_admin_creates_a_key_that_works_then_revokes_it(
    page: Page, console_gateway: Server
) -> None:
    name = f"carol-{secrets.token_hex(3)}"
    sign_in(page, ADMIN_KEY, "Usage")
    page.get_by_role("link", name="Keys").click()
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Account", exact=True).fill(ACCOUNT)
    page.get_by_label("Requests per minute", exact=True).fill("100")
    page.get_by_role("button", name="Create key").click()
    secret_box = page.get_by_label("New secret")
    expect(secret_box).to_have_text(re.compile(r"^sk-\S{20,}$"))
    secret = secret_box.inner_text()
    row = page.get_by_role("table", name="Keys").locator("tr", has_text=name)
    expect(row).to_contain_text("100")
    expect(row).to_contain_text("active")
    assert secret not in row.inner_text()

    assert until(lambda: status_with(console_gateway, secret) == 200), "new key never worked"
    client = openai.OpenAI(base_url=console_gateway.url + "/v1", api_key=secret)
    answer = client.chat.completions.create(
        model="gemma-2b", messages=[{"role": "user", "content": "[[emulate:reply made by carol]]"}]
    )
    assert answer.choices[0].message.content == "made by carol"

    def accept(dialog: Dialog) -> None:
        dialog.accept()

    page.once("dialog", accept)
    page.get_by_role("button", name=f"Revoke {name}").click()
    page.get_by_label("Show revoked", exact=True).check()
    expect(row).to_contain_text("revoked")
    assert until(lambda: status_with(console_gateway, secret) in (401, 403)), "still accepted"


def test_a_viewer_sees_keys_but_cannot_create_one(page: Page, console_gateway: Server) -> None:
    sign_in(page, VIEWER_KEY, "Usage")
    page.get_by_role("link", name="Keys").click()
    expect(page.get_by_text("This is a viewer key")).to_be_visible()
    expect(page.get_by_role("table", name="Keys")).to_be_visible()
    expect(page.get_by_role("button", name="Create key")).to_have_count(0)
    expect(page.get_by_role("button", name="Create team")).to_have_count(0)
    expect(page.get_by_role("button", name="Revoke")).to_have_count(0)
    # The API refuses what the page does not offer.
    refused = httpx.post(
        console_gateway.url + "/admin/keys",
        json={"name": "mallory"},
        headers={"authorization": f"Bearer {VIEWER_KEY}"},
    )
    assert refused.status_code == 403
    assert refused.json()["error"]["type"] == "permission_error"
