"""Client schemas: no reference is ever retrieved, patterns cannot stall, sizes are capped."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from gateway.engine.tools.schemas import (
    _LOCAL_ONLY,
    MAX_PATTERN_CHARS,
    MAX_SCHEMA_NODES,
    Schema,
    _safe,
    compile_schema,
)
from gateway.errors import BadRequest
from tests.recorder import recording_server

PARAM = "response_format.json_schema.schema"


def _refused(schema: Any) -> str:
    with pytest.raises(BadRequest) as caught:
        compile_schema(schema, PARAM)
    assert caught.value.param == PARAM
    assert caught.value.code == "invalid_schema"
    return caught.value.message


def test_remote_references_are_refused_before_anything_is_fetched() -> None:
    with recording_server() as (url, seen):
        schemas = [
            {"$ref": f"{url}/x.json"},
            {"properties": {"a": {"$ref": f"{url}/x.json#/nested"}}},
            {"$defs": {"d": {"$dynamicRef": f"{url}/meta"}}},
            {"items": [{"$ref": "relative.json"}]},
            # an id below the top level would move the base of the '#' references under it
            {"properties": {"a": {"$id": f"{url}/a.json", "$ref": "#/b"}}},
            {"x": {"$id": f"{url}/y.json", "$ref": "#/z"}, "$ref": "#/x"},
        ]
        for schema in schemas:
            message = _refused(schema)
            assert "local reference" in message or "$id" in message
        assert seen == []
        # $schema naming a remote dialect is never fetched either
        compile_schema({"$schema": f"{url}/dialect", "type": "object"}, PARAM)
        assert seen == []


def test_a_file_reference_leaks_nothing(tmp_path: Path) -> None:
    secret = tmp_path / "secret.json"
    secret.write_text('{"nested": {"const": "TOPSECRET-4711"}}')
    message = _refused({"$ref": f"file://{secret}#/nested"})
    assert "TOPSECRET" not in message


def test_the_validator_itself_cannot_retrieve() -> None:
    """Defence in depth: a validator built past the walk still fetches nothing."""
    with recording_server() as (url, seen):
        base = jsonschema.Draft202012Validator
        validator = _safe(base)({"$ref": f"{url}/x.json"}, registry=_LOCAL_ONLY)
        schema = Schema(validator, PARAM, 1.0, base.__name__)
        with pytest.raises(BadRequest) as caught:
            schema.problem("anything")
        assert caught.value.param == PARAM
        assert seen == []


def test_local_references_and_a_top_level_id_still_work() -> None:
    schema = compile_schema(
        {
            "$id": "https://example.com/person.json",
            "$defs": {"name": {"type": "string"}},
            "type": "object",
            "properties": {"name": {"$ref": "#/$defs/name"}, "tag": {"$ref": "#tag"}},
            "additionalProperties": {"$anchor": "tag", "type": "integer"},
        },
        PARAM,
    )
    assert schema.problem({"name": "Ada", "tag": 1}) is None
    error = schema.problem({"name": 5})
    assert error is not None and "is not of type 'string'" in error.message


def test_a_dangling_local_reference_is_a_400() -> None:
    assert "does not point into the schema" in _refused({"$ref": "#/$defs/missing"})


def test_catastrophic_patterns_run_in_linear_time() -> None:
    schema = compile_schema(
        {
            "properties": {
                "a": {"pattern": "^(a+)+$"},
                "b": {"pattern": "^(a|a)+$"},
                "c": {"patternProperties": {"^(x+x+)+y$": {"type": "integer"}}},
            }
        },
        PARAM,
    )
    evil = "a" * 40 + "!"
    start = time.monotonic()
    error = schema.problem({"a": evil, "b": evil, "c": {"x" * 40: "no"}})
    # Backtracking takes hours here, a linear engine microseconds: the bound is loose so a
    # loaded machine (parallel workers on two cores) does not fail it.
    assert time.monotonic() - start < 5.0
    assert error is not None and "does not match" in error.message
    assert schema.problem({"a": "aaa", "b": "aa", "c": {}}) is None


def test_ecma_unicode_escapes_in_patterns() -> None:
    schema = compile_schema({"pattern": "^\\u00e9\\u{1F600}?$"}, PARAM)
    assert schema.problem("é") is None
    assert schema.problem("e") is not None


def test_patterns_a_linear_engine_cannot_run_are_refused() -> None:
    for pattern in ("(?=a)b", "(a)\\1", "(?<!x)y"):
        assert "not supported" in _refused({"pattern": pattern})
    assert "not supported" in _refused({"patternProperties": {"(?=a)": {}}})
    assert "characters" in _refused({"pattern": "a" * (MAX_PATTERN_CHARS + 1)})


def test_schema_size_is_capped() -> None:
    wide = {"enum": list(range(MAX_SCHEMA_NODES + 1))}
    assert "values" in _refused(wide)


def test_the_time_budget_ends_a_long_check_with_a_clear_400() -> None:
    schema = compile_schema({"items": {"pattern": "^[a-z]+$"}}, PARAM, seconds=1e-9)
    with pytest.raises(BadRequest) as caught:
        schema.problem(["abc"] * 50)
    assert caught.value.code == "schema_too_complex"
    assert caught.value.param == PARAM
    assert "took longer than" in caught.value.message


def test_unique_items_is_linear_and_keeps_json_equality() -> None:
    schema = compile_schema({"uniqueItems": True}, PARAM)
    assert schema.problem([1, 1.0]) is not None
    assert schema.problem([True, 1]) is None
    assert schema.problem([{"a": 1, "b": [2]}, {"b": [2], "a": 1}]) is not None
    assert schema.problem([{"a": 1}, {"a": 2}, [1], [True], None, "1"]) is None
    many = [{"n": i, "tags": [str(i)]} for i in range(5_000)]
    start = time.monotonic()
    assert schema.problem(many) is None
    # Pairwise (12.5 million comparisons) takes over 10 s here, hashing a few milliseconds:
    # the bound is loose so a loaded machine does not fail it.
    assert time.monotonic() - start < 5.0


def test_the_budget_bounds_every_keyword_not_only_patterns() -> None:
    schema = compile_schema({"items": {"type": "object"}}, PARAM, seconds=1e-9)
    with pytest.raises(BadRequest) as caught:
        schema.problem([{}] * 100)
    assert caught.value.code == "schema_too_complex"


@pytest.mark.parametrize("dialect", [{}, [], 5, 2**70, True])
def test_a_dialect_that_is_not_a_string_is_a_400(dialect: Any) -> None:
    """jsonschema hashed (dict, list) or decoded (int, bool) it: a 500 found by fuzzing."""
    with pytest.raises(BadRequest) as caught:
        compile_schema({"$schema": dialect, "type": "object"}, "response_format")
    assert caught.value.param == "response_format" and "$schema" in caught.value.message
