"""Time ranges for reports, and the report as text and JSON."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.ledger import UsageRow, format_report, parse_time_range, rows_to_json

NOW = datetime(2024, 5, 10, 15, 30, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("since", "until", "expected"),
    [
        (None, None, ("2024-05-09T15:30:00+00:00", "2024-05-10T15:30:00+00:00")),
        ("24h", None, ("2024-05-09T15:30:00+00:00", "2024-05-10T15:30:00+00:00")),
        ("7d", "now", ("2024-05-03T15:30:00+00:00", "2024-05-10T15:30:00+00:00")),
        ("90s", None, ("2024-05-10T15:28:30+00:00", "2024-05-10T15:30:00+00:00")),
        ("2w", "1d", ("2024-04-26T15:30:00+00:00", "2024-05-09T15:30:00+00:00")),
        ("30m", None, ("2024-05-10T15:00:00+00:00", "2024-05-10T15:30:00+00:00")),
        ("today", None, ("2024-05-10T00:00:00+00:00", "2024-05-10T15:30:00+00:00")),
        ("2024-05-01", "2024-05-02", ("2024-05-01T00:00:00+00:00", "2024-05-03T00:00:00+00:00")),
        ("2024-04", "2024-04", ("2024-04-01T00:00:00+00:00", "2024-05-01T00:00:00+00:00")),
        ("2023-12", "2023-12", ("2023-12-01T00:00:00+00:00", "2024-01-01T00:00:00+00:00")),
        ("2024-05-01T12:00", None, ("2024-05-01T12:00:00+00:00", "2024-05-10T15:30:00+00:00")),
        (
            "2024-05-01T12:00:00+02:00",
            "2024-05-01T13:00:00Z",
            ("2024-05-01T10:00:00+00:00", "2024-05-01T13:00:00+00:00"),
        ),
        (None, "2024-05-05", ("2024-05-05T00:00:00+00:00", "2024-05-06T00:00:00+00:00")),
    ],
)
def test_parse_time_range(since: str | None, until: str | None, expected: tuple[str, str]) -> None:
    start, end = parse_time_range(since, until, now=NOW)
    assert (start.isoformat(), end.isoformat()) == expected
    assert start.tzinfo is not None and end.tzinfo is not None


@pytest.mark.parametrize(
    ("since", "until", "message"),
    [
        ("yesterday-ish", None, "cannot read"),
        ("5y", None, "cannot read"),
        ("2024-13", None, "invalid month"),
        ("1h", "2h", "empty"),
        ("2024-05-02", "2024-05-01T00:00Z", "empty"),
        ("99999999999999d", None, "out of range"),
        (None, "9999-12-31", "out of range"),
        ("0001-01-01T00:00+01:00", None, "out of range"),
    ],
)
def test_parse_time_range_rejects(since: str | None, until: str | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_time_range(since, until, now=NOW)


ROWS = [
    UsageRow("alice", "llama", 3, 1, 1200, 300, 1500, 250.0),
    UsageRow("bob-the-builder", "mistral-7b", 1, 0, 5, 5, 10, 1000.0, cached=1, tokens_saved=10),
]


def test_rows_to_json() -> None:
    assert rows_to_json(ROWS[:1]) == [
        {
            "key_name": "alice",
            "model": "llama",
            "requests": 3,
            "errors": 1,
            "prompt_tokens": 1200,
            "completion_tokens": 300,
            "total_tokens": 1500,
            "avg_duration_ms": 250.0,
            "cached": 0,
            "tokens_saved": 0,
        }
    ]
    assert rows_to_json([]) == []


def test_format_report_table() -> None:
    text = format_report(ROWS, NOW.replace(hour=0, minute=0), NOW)
    lines = text.splitlines()
    assert lines[0] == "Usage from 2024-05-10 00:00:00 UTC to 2024-05-10 15:30:00 UTC"
    assert lines[1].split() == [
        "KEY", "MODEL", "REQUESTS", "ERRORS", "PROMPT", "COMPLETION", "TOTAL", "AVG", "MS",
        "CACHED", "SAVED",
    ]  # fmt: skip
    assert lines[3].split() == [
        "alice",
        "llama",
        "3",
        "1",
        "1,200",
        "300",
        "1,500",
        "250",
        "0",
        "0",
    ]
    assert lines[4].split() == [
        "bob-the-builder", "mistral-7b", "1", "0", "5", "5", "10", "1,000", "1", "10"
    ]  # fmt: skip
    assert lines[-1].split() == ["TOTAL", "4", "1", "1,205", "305", "1,510", "438", "1", "10"]
    # Columns line up: every number ends where its heading ends.
    assert len({len(line) for line in lines[1:4]}) == 1


def test_format_report_single_row_and_empty() -> None:
    single = format_report(ROWS[:1])
    lines = single.splitlines()
    assert len(lines) == 3 and lines[2].startswith("alice")  # no total line for one row
    assert format_report([]) == "No usage recorded in this range.\n"
