"""The catalog as one key sees it: models it may not use do not exist."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config import ModelSettings
from gateway.engine.catalog import ModelCatalog
from gateway.errors import NotFound
from gateway.http.shapes import openai_body

GEMMA = ModelSettings(name="gemma-2b", tag="gemma:2b", aliases=("gpt-3.5-turbo",))
LLAMA = ModelSettings(name="llama2", tag="llama2", template="llama2")


def _missing(catalog: ModelCatalog, name: str) -> dict[str, Any]:
    with pytest.raises(NotFound) as info:
        catalog.resolve(name)
    error: dict[str, Any] = openai_body(info.value)["error"]
    return error


def test_a_forbidden_model_answers_like_an_unknown_one() -> None:
    view = ModelCatalog([GEMMA, LLAMA]).for_key(("gemma-2b",))
    assert view.resolve("gpt-3.5-turbo") is GEMMA
    hidden, unknown = _missing(view, "llama2"), _missing(view, "nope")
    assert hidden == {**unknown, "message": unknown["message"].replace("nope", "llama2")}
    assert [m.name for m in view.models] == ["gemma-2b"]
    assert view.names() == ["gemma-2b", "gpt-3.5-turbo"]


def test_allowing_an_alias_allows_the_model_under_every_name() -> None:
    view = ModelCatalog([GEMMA, LLAMA]).for_key(("gpt-3.5-turbo",))
    assert view.resolve("gemma-2b") is GEMMA
    assert [m.name for m in view.models] == ["gemma-2b"]


def test_no_restriction_is_the_catalog_itself() -> None:
    catalog = ModelCatalog([GEMMA, LLAMA])
    assert catalog.for_key(None) is catalog
    assert catalog.template(LLAMA) is catalog.for_key(("llama2",)).template(LLAMA)
