"""Models in Anthropic's list shape, paged as Anthropic pages them."""

from __future__ import annotations

import pytest
from anthropic.types import ModelInfo

from gateway.anthropic.models import model_object, model_page, wants_anthropic
from gateway.config import ModelSettings
from gateway.errors import BadRequest

MODELS = [ModelSettings(name=f"m{i}", tag=f"t{i}") for i in range(5)]
ENTRIES = [(m.name, m) for m in MODELS]


def ids(page: dict[str, object]) -> list[str]:
    return [m["id"] for m in page["data"]]  # type: ignore[attr-defined, index]


def test_objects_validate_as_the_sdks_model_info() -> None:
    described = ModelSettings(
        name="gemma-2b", tag="g", description="Google Gemma 2B", max_tokens=512, context_window=8192
    )
    assert ModelInfo.model_validate(model_object("gemma-2b", described)).display_name == (
        "Google Gemma 2B"
    )
    alias = ModelInfo.model_validate(model_object("claude-x", MODELS[0]))
    assert alias.id == "claude-x" and alias.display_name == "claude-x (m0)"


def test_pages_forward_and_back() -> None:
    first = model_page(ENTRIES, {"limit": "2"})
    assert ids(first) == ["m0", "m1"] and first["has_more"] is True
    assert (first["first_id"], first["last_id"]) == ("m0", "m1")
    second = model_page(ENTRIES, {"limit": "2", "after_id": "m1"})
    assert ids(second) == ["m2", "m3"] and second["has_more"] is True
    last = model_page(ENTRIES, {"limit": "2", "after_id": "m3"})
    assert ids(last) == ["m4"] and last["has_more"] is False
    back = model_page(ENTRIES, {"limit": "2", "before_id": "m2"})
    assert ids(back) == ["m0", "m1"] and back["has_more"] is False
    assert ids(model_page(ENTRIES, {"before_id": "m4", "limit": "1"})) == ["m3"]
    assert model_page(ENTRIES, {})["has_more"] is False
    empty = model_page(ENTRIES, {"after_id": "nothing"})
    assert empty == {"data": [], "has_more": False, "first_id": None, "last_id": None}


@pytest.mark.parametrize("limit", ["0", "1001", "ten", "-1"])
def test_a_bad_limit_is_a_400(limit: str) -> None:
    with pytest.raises(BadRequest):
        model_page(ENTRIES, {"limit": limit})


def test_anthropic_clients_are_told_by_their_version_header() -> None:
    assert wants_anthropic({"anthropic-version": "2023-06-01"})
    assert not wants_anthropic({"authorization": "Bearer x"})


def test_limits_are_told_where_the_config_has_them() -> None:
    described = ModelSettings(name="g", tag="g", max_tokens=512, context_window=8192)
    info = ModelInfo.model_validate(model_object("g", described))
    assert (info.max_tokens, info.max_input_tokens, info.lifecycle) == (512, 8192, "active")
