"""The quick-start setup: with no upstream configured, the gateway fronts its own emulator."""

from __future__ import annotations

from gateway.config import AccountSettings, KeySettings, ModelSettings, Settings

DEMO_MODELS = (
    ModelSettings(name="gemma-2b", tag="gemma:2b", aliases=("gemma:2b",), template="gemma"),
    ModelSettings(name="llama2-uncensored", tag="llama2-uncensored", template="llama2"),
)


def with_demo_defaults(settings: Settings, emulator_token: str) -> Settings:
    """Fill in demo models, the demo key and the demo account when the config gives none."""
    update: dict[str, object] = {}
    if not settings.accounts:
        update["accounts"] = (AccountSettings(name="demo", upstream_token=emulator_token),)
    if not settings.models:
        update["models"] = DEMO_MODELS
    if not settings.keys:
        update["keys"] = (
            KeySettings(name="demo", key=settings.emulator.demo_key, upstream_token=emulator_token),
        )
    return settings.model_copy(update=update) if update else settings
