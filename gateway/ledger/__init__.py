"""The usage ledger: one row per request in SQLite or PostgreSQL, written off the request path."""

from gateway.ledger.ledger import Ledger, store_from_url
from gateway.ledger.record import UsageRecord, UsageRow
from gateway.ledger.report import format_report, parse_time_range, rows_to_json
from gateway.ledger.store import DEFAULT_TABLE, LedgerStore

__all__ = [
    "DEFAULT_TABLE",
    "Ledger",
    "LedgerStore",
    "UsageRecord",
    "UsageRow",
    "format_report",
    "parse_time_range",
    "rows_to_json",
    "store_from_url",
]
