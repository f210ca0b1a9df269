"""The ledger's storage interface, and the SQL both databases share.

One table, one row per request, created when missing::

    request_id TEXT, time (UTC), key_name TEXT, model TEXT, endpoint TEXT, stream BOOLEAN,
    prompt_tokens INTEGER, completion_tokens INTEGER, job_ids TEXT (a JSON array),
    outcome TEXT, status_code INTEGER, duration_ms REAL, queue_ms REAL NULL,
    ttft_ms REAL NULL, prompt_text TEXT NULL, cached BOOLEAN, tokens_saved INTEGER

(the last two were added later: :data:`ADDED_COLUMNS` are added to an older table on open)

with an index on ``time`` and one on ``(key_name, time)``: reports select a time range, often
for one key.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from gateway.ledger.record import IN_FLIGHT, INTERRUPTED, UsageRecord, UsageRow

DEFAULT_TABLE = "gateway_usage"

COLUMNS = (
    "request_id",
    "time",
    "key_name",
    "model",
    "endpoint",
    "stream",
    "prompt_tokens",
    "completion_tokens",
    "job_ids",
    "outcome",
    "status_code",
    "duration_ms",
    "queue_ms",
    "ttft_ms",
    "prompt_text",
    "cached",
    "tokens_saved",
)

#: Columns added after the first release, as (name, SQL type and default), for older tables.
ADDED_COLUMNS = (
    ("cached", "BOOLEAN NOT NULL DEFAULT FALSE"),
    ("tokens_saved", "INTEGER NOT NULL DEFAULT 0"),
)

_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


class LedgerStore(Protocol):
    """A database holding usage records."""

    async def open(self) -> None:
        """Connect and create the table and its indexes if they are missing."""
        ...

    async def write_many(
        self, records: Sequence[UsageRecord], replacing: Sequence[str] = ()
    ) -> None:
        """Insert ``records`` in one transaction, after deleting the ``in_flight`` rows of the
        request ids in ``replacing`` (their final rows are among ``records``)."""
        ...

    async def mark_interrupted(self, before: datetime) -> int:
        """``in_flight`` rows older than ``before`` (their process died) become
        ``interrupted``; how many."""
        ...

    async def budget_usage(self, since: datetime, cached: bool) -> dict[str, int]:
        """Tokens per key name since ``since``; cache hits counted only when ``cached``."""
        ...

    async def report(
        self, since: datetime | None, until: datetime | None, key_name: str | None = None
    ) -> list[UsageRow]:
        """Usage grouped by key and model for ``since <= time < until`` (``None``: unbounded)."""
        ...

    async def close(self) -> None: ...


def check_table_name(table: str) -> str:
    """Table names are spliced into SQL, so only plain identifiers are accepted."""
    if not _TABLE_NAME.fullmatch(table):
        raise ValueError(f"invalid ledger table name {table!r}: use letters, digits and _")
    return table


def as_utc(moment: datetime) -> datetime:
    """An aware UTC datetime; a naive one is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def encode_job_ids(job_ids: Sequence[str]) -> str:
    return json.dumps(list(job_ids))


def decode_job_ids(text: str) -> tuple[str, ...]:
    return tuple(str(job) for job in json.loads(text)) if text else ()


def report_query(
    table: str,
    since: Any,
    until: Any,
    key_name: str | None,
    placeholder: Callable[[int], str],
) -> tuple[str, list[Any]]:
    """The grouped report as SQL and parameters; ``placeholder(n)`` spells the n-th parameter."""
    where: list[str] = []
    params: list[Any] = []
    for clause, value in (('"time" >= ', since), ('"time" < ', until), ("key_name = ", key_name)):
        if value is not None:
            params.append(value)
            where.append(clause + placeholder(len(params)))
    sql = (
        "SELECT key_name, model, COUNT(*), "
        "SUM(CASE WHEN outcome = 'ok' THEN 0 ELSE 1 END), "
        "COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), "
        f"COALESCE(AVG(duration_ms), 0), "
        "SUM(CASE WHEN cached THEN 1 ELSE 0 END), COALESCE(SUM(tokens_saved), 0) "
        f"FROM {table}"
        + (" WHERE " + " AND ".join(where) if where else "")
        + " GROUP BY key_name, model ORDER BY key_name, model"
    )
    return sql, params


def replace_sql(table: str, count: int, placeholder: Callable[[int], str]) -> str:
    """Deletes the in-flight rows of ``count`` request ids (parameters 1..count)."""
    marks = ", ".join(placeholder(n) for n in range(1, count + 1))
    return f"DELETE FROM {table} WHERE outcome = '{IN_FLIGHT}' AND request_id IN ({marks})"


def interrupted_sql(table: str, placeholder: Callable[[int], str]) -> str:
    return (
        f"UPDATE {table} SET outcome = '{INTERRUPTED}' "
        f"WHERE outcome = '{IN_FLIGHT}' AND \"time\" < {placeholder(1)}"
    )


def budget_sql(table: str, cached: bool, placeholder: Callable[[int], str]) -> str:
    """Tokens per key since parameter 1, as the limits' budgets charge them."""
    hits = "" if cached else " AND NOT cached"
    return (
        f"SELECT key_name, COALESCE(SUM(prompt_tokens + completion_tokens), 0) FROM {table} "
        f'WHERE "time" >= {placeholder(1)}{hits} GROUP BY key_name'
    )


def in_flight_index_sql(table: str) -> str:
    """A partial index: finding a request's in-flight row costs nothing on a large table."""
    return (
        f"CREATE INDEX IF NOT EXISTS {table}_in_flight ON {table} (request_id) "
        f"WHERE outcome = '{IN_FLIGHT}'"
    )


def row_from_result(values: Sequence[Any]) -> UsageRow:
    key_name, model, requests, errors, prompt, completion, avg, cached, saved = values
    return UsageRow(
        key_name=str(key_name),
        model=str(model),
        requests=int(requests),
        errors=int(errors or 0),
        prompt_tokens=int(prompt),
        completion_tokens=int(completion),
        total_tokens=int(prompt) + int(completion),
        avg_duration_ms=float(avg),
        cached=int(cached or 0),
        tokens_saved=int(saved or 0),
    )
