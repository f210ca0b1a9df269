"""Usage reports for people (``gateway usage``) and programs (the admin endpoint). Pure."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.ledger.record import UsageRow

DEFAULT_RANGE = timedelta(hours=24)

_RELATIVE = re.compile(r"(\d+)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_MONTH = re.compile(r"\d{4}-\d{2}")


def parse_time_range(
    since: str | None, until: str | None, *, now: datetime | None = None
) -> tuple[datetime, datetime]:
    """The UTC range ``[since, until)`` a report covers.

    Each bound may be an ISO time (``2024-05-01T12:00``, ``...Z``, ``...+02:00``; no offset means
    UTC), a date (``2024-05-01``) or a month (``2024-05``), a relative age (``90s``, ``30m``,
    ``24h``, ``7d``, ``2w``: that long before now), ``now`` or ``today`` (UTC midnight). A date or
    month given as ``until`` includes that whole day or month. The defaults are the last 24 hours.
    """
    now = (now or datetime.now(UTC)).astimezone(UTC)
    try:
        end = _parse_bound(until, now, end=True) if until else now
        start = _parse_bound(since, now, end=False) if since else end - DEFAULT_RANGE
    except OverflowError:  # an age of 10**20 days, 9999-12-31 + 1 day: no date holds them
        raise ValueError("the time range is out of range (years 1 to 9999)") from None
    if start >= end:
        raise ValueError(f"the range is empty: {start.isoformat()} is not before {end.isoformat()}")
    return start, end


def _parse_bound(text: str, now: datetime, *, end: bool) -> datetime:
    value = text.strip().lower()
    if value == "now":
        return now
    if value == "today":
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return midnight + timedelta(days=1) if end else midnight
    if match := _RELATIVE.fullmatch(value):
        return now - timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
    if _MONTH.fullmatch(value):
        year, month = (int(part) for part in value.split("-"))
        if end:
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        try:
            return datetime(year, month, 1, tzinfo=UTC)
        except ValueError:
            raise ValueError(f"invalid month {text!r}") from None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"cannot read the time {text!r}: use an ISO date or time (2024-05-01, "
            "2024-05-01T12:00Z), a month (2024-05), an age (30m, 24h, 7d) or now/today"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if end and _DATE.fullmatch(value):
        moment += timedelta(days=1)
    return moment.astimezone(UTC)


def rows_to_json(rows: Sequence[UsageRow]) -> list[dict[str, Any]]:
    """JSON-ready dicts, one per key and model."""
    return [
        {
            "key_name": row.key_name,
            "model": row.model,
            "requests": row.requests,
            "errors": row.errors,
            "prompt_tokens": row.prompt_tokens,
            "completion_tokens": row.completion_tokens,
            "total_tokens": row.total_tokens,
            "avg_duration_ms": round(row.avg_duration_ms, 1),
            "cached": row.cached,
            "tokens_saved": row.tokens_saved,
        }
        for row in rows
    ]


_HEADINGS = (
    "KEY",
    "MODEL",
    "REQUESTS",
    "ERRORS",
    "PROMPT",
    "COMPLETION",
    "TOTAL",
    "AVG MS",
    "CACHED",
    "SAVED",
)


def format_report(
    rows: Sequence[UsageRow], since: datetime | None = None, until: datetime | None = None
) -> str:
    """A plain-text table, one line per key and model, with a total line when there are several."""
    lines: list[str] = []
    if since is not None and until is not None:
        lines.append(f"Usage from {_show(since)} to {_show(until)}")
    if not rows:
        lines.append("No usage recorded in this range.")
        return "\n".join(lines) + "\n"
    table = [[*_cells(row)] for row in rows]
    if len(rows) > 1:
        requests = sum(r.requests for r in rows)
        avg = sum(r.avg_duration_ms * r.requests for r in rows) / requests if requests else 0.0
        total = UsageRow(
            key_name="TOTAL",
            model="",
            requests=requests,
            errors=sum(r.errors for r in rows),
            prompt_tokens=sum(r.prompt_tokens for r in rows),
            completion_tokens=sum(r.completion_tokens for r in rows),
            total_tokens=sum(r.total_tokens for r in rows),
            avg_duration_ms=avg,
            cached=sum(r.cached for r in rows),
            tokens_saved=sum(r.tokens_saved for r in rows),
        )
        table.append([*_cells(total)])
    widths = [max(len(h), *(len(line[i]) for line in table)) for i, h in enumerate(_HEADINGS)]

    def render(cells: Sequence[str]) -> str:
        parts = [
            cell.ljust(width) if i < 2 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    lines.append(render(_HEADINGS))
    lines.append(render(["-" * w for w in widths]))
    lines.extend(render(line) for line in table[: len(rows)])
    if len(rows) > 1:
        lines.append(render(["-" * w for w in widths]))
        lines.append(render(table[-1]))
    return "\n".join(lines) + "\n"


def _cells(row: UsageRow) -> tuple[str, ...]:
    return (
        row.key_name,
        row.model,
        f"{row.requests:,}",
        f"{row.errors:,}",
        f"{row.prompt_tokens:,}",
        f"{row.completion_tokens:,}",
        f"{row.total_tokens:,}",
        f"{row.avg_duration_ms:,.0f}",
        f"{row.cached:,}",
        f"{row.tokens_saved:,}",
    )


def _show(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
