"""Steps the console's browser tests share."""

from __future__ import annotations

from playwright.sync_api import Page, expect


def sign_in(page: Page, key: str, landing: str) -> None:
    """Open the console, sign in with the keyboard, and wait for the landing page."""
    page.goto("/")
    field = page.get_by_label("API key", exact=True)
    field.focus()
    page.keyboard.type(key)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name=landing, level=1)).to_be_visible()
