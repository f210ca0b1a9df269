"""Model names and aliases, glob patterns among them."""

from __future__ import annotations

import pytest

from gateway.config import ModelSettings
from gateway.engine.catalog import ModelCatalog
from gateway.errors import NotFound

GEMMA = ModelSettings(name="gemma-2b", tag="gemma:2b", aliases=("claude-*", "gpt-3.5-turbo"))
LLAMA = ModelSettings(name="llama2", tag="llama2", aliases=("claude-haiku-*", "claude-3-5-haiku"))


def test_exact_names_win_over_patterns_and_patterns_go_in_order() -> None:
    catalog = ModelCatalog([GEMMA, LLAMA])
    assert catalog.resolve("gemma-2b") is GEMMA
    assert catalog.resolve("claude-3-5-haiku") is LLAMA  # exact alias beats GEMMA's pattern
    assert catalog.resolve("claude-opus-4-5") is GEMMA
    assert catalog.resolve("claude-haiku-4-5") is GEMMA  # the first pattern that matches
    assert "claude-*" not in catalog.names()


def test_patterns_match_whole_names_and_respect_allowed_models() -> None:
    catalog = ModelCatalog([GEMMA, LLAMA])
    for name in ("my-claude-x", "claude", "x" * 300, "claude-" + "x" * 300):
        with pytest.raises(NotFound):
            catalog.resolve(name)
    with pytest.raises(NotFound):
        catalog.resolve("claude-opus-4-5", allowed=("llama2",))
