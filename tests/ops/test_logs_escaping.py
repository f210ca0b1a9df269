"""A client cannot forge log lines or bloat the access line (issue 12, item 7)."""

from __future__ import annotations

import json
import logging

from gateway.ops.logs import capped_names, escape_controls, log_request
from tests.ops.test_logs import restore_logging, setup

__all__ = ["restore_logging"]  # the autouse fixture that puts the process's loggers back

FORGED = "x\n2026-01-01 00:00:00,000 WARNING gateway.access: /admin/reload 200 ok key=admin"


def _access_line(**extra: object) -> None:
    log_request(
        logging.getLogger("gateway.access"),
        request_id="req-1",
        route="/v1/chat/completions",
        status=200,
        duration_ms=1.0,
        **extra,
    )


def test_text_values_with_newlines_and_escapes_stay_on_one_line() -> None:
    _, stream = setup("text")
    _access_line(ignored_fields=[FORGED, "\x1b[2Jclear", "a,b"], note=f"one{FORGED}")
    logging.getLogger("gateway.test").warning("client said %s", FORGED + "\r\u2028end")
    first, second = stream.getvalue().splitlines()
    assert "\x1b" not in first and "\\u001b[2Jclear" in first
    assert "\\n2026-01-01" in first and '"a,b"' in first
    assert second.endswith(
        "client said x\\n2026-01-01 00:00:00,000 WARNING gateway.access: "
        "/admin/reload 200 ok key=admin\\r\\u2028end"
    )


def test_json_lines_escape_too() -> None:
    _, stream = setup("json")
    _access_line(ignored_fields=[FORGED])
    (line,) = stream.getvalue().splitlines()
    assert json.loads(line)["ignored_fields"] == [FORGED]


def test_twenty_thousand_unknown_fields_make_a_short_access_line() -> None:
    _, stream = setup("text")
    names = [f"field_{i:05d}" for i in range(20_000)]
    _access_line(ignored_fields=capped_names(names))
    (line,) = stream.getvalue().splitlines()
    assert len(line) < 1_000
    assert "field_00000" in line and "(+19980 more)" in line


def test_capped_names_bounds_count_and_characters() -> None:
    assert capped_names(["a", "b"]) == ["a", "b"]
    assert capped_names([]) == []
    assert capped_names(["x" * 10_000]) == ["x" * 497 + "..."]
    many = capped_names(["y" * 100] * 30)
    assert sum(len(n) for n in many[:-1]) <= 500 and many[-1] == "(+25 more)"


def test_escape_controls_leaves_printable_text_alone() -> None:
    assert escape_controls("plain text, ünïcode") == "plain text, ünïcode"
    assert escape_controls("a\tb\x00") == "a\\tb\\x00"
