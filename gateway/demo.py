"""The quick-start setup: with no upstream configured, the gateway fronts its own emulator."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from gateway.config import (
    AccountSettings,
    AdminKeySettings,
    AdminSettings,
    KeySettings,
    LedgerSettings,
    ModelSettings,
    Settings,
)

DEMO_MODELS = (
    ModelSettings(name="gemma-2b", tag="gemma:2b", aliases=("gemma:2b",), template="gemma"),
    ModelSettings(name="llama2-uncensored", tag="llama2-uncensored", template="llama2"),
)
DEMO_ADMIN_NAME = "demo-admin"


def demo_ledger_url(environ: Mapping[str, str] | None = None) -> str:
    """The demo's usage ledger: a file in the user's cache directory, never the current one
    (a quick start run from the clone must leave nothing in it)."""
    env = os.environ if environ is None else environ
    cache = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return f"sqlite:///{(cache / 'llm-gateway' / 'demo-usage.db').resolve()}"


def with_demo_defaults(settings: Settings, emulator_token: str) -> Settings:
    """Fill in demo models, the demo key and admin key, the demo account and, when the config
    leaves the ledger at its default, the demo's own ledger file; each only when not given."""
    update: dict[str, object] = {}
    if not settings.accounts:
        update["accounts"] = (AccountSettings(name="demo", upstream_token=emulator_token),)
    if not settings.models:
        update["models"] = DEMO_MODELS
    if not settings.keys:
        update["keys"] = (
            KeySettings(name="demo", key=settings.emulator.demo_key, upstream_token=emulator_token),
        )
    if not settings.admin.all_keys() and settings.emulator.demo_admin_key:
        admin = AdminKeySettings(name=DEMO_ADMIN_NAME, key=settings.emulator.demo_admin_key)
        update["admin"] = AdminSettings(keys=(admin,))
    if settings.ledger.url == LedgerSettings.model_fields["url"].default:
        update["ledger"] = settings.ledger.model_copy(update={"url": demo_ledger_url()})
    return settings.model_copy(update=update) if update else settings


def demo_admin_key(settings: Settings) -> str | None:
    """The demo admin key in force for ``settings`` after :func:`with_demo_defaults`, if any."""
    for admin in settings.admin.all_keys():
        if admin.name == DEMO_ADMIN_NAME:
            return admin.key
    return None
