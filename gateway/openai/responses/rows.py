"""A stored response as database rows: the record, its columns and the JSON it is kept as.

Shared by the store's statements (:mod:`.store`) and by what counts them (the caps and quotas
count :func:`stored_len` of what :func:`dumps` writes).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from gateway.http.sse import dumps as json_bytes


@dataclass(slots=True)
class StoredResponse:
    id: str
    key_id: str
    key_name: str
    created_at: float
    expires_at: float
    status: str
    background: bool
    body: dict[str, Any]
    request: dict[str, Any] = field(default_factory=dict)
    previous_id: str | None = None
    job_ids: list[str] = field(default_factory=list)
    seq: int = 0
    owner: str | None = None
    lease_until: float = 0.0
    #: The request id of the call that created it: a run resumed elsewhere is recorded (and
    #: charged in the ledger) under it, so that its final row replaces the first one's.
    request_id: str | None = None


class Dumped(NamedTuple):
    """A request's stored text and its input items' (as :func:`dumps` makes them), made once:
    counted against the caps before the run, written with it after."""

    request: str
    inputs: list[str]


COLUMNS = (
    "id, key_id, key_name, created_at, expires_at, status, background, body, request, "
    "previous_id, job_ids, seq, owner, lease_until, request_id"
)
ITEMS_INSERT = (
    "INSERT INTO {t}_items (item_id, response_id, key_id, key_name, position, role, data) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def dumps(value: Any) -> str:
    """Compact JSON text as stored, by the encoder every answer uses (orjson: a tenth of the
    standard library's time for a response object)."""
    return json_bytes(value).decode()


def stored_len(text: str) -> int:
    """The bytes ``text`` takes stored (UTF-8): what the caps and quotas count."""
    return len(text) if text.isascii() else len(text.encode())


def stored_body(body: dict[str, Any], final: bool) -> str:
    """A final object is stored without its output: that lives in T_items, once."""
    return dumps({k: v for k, v in body.items() if k != "output"} if final else body)


def to_row(record: StoredResponse, body: str, request: str) -> list[Any]:
    return [
        record.id,
        record.key_id,
        record.key_name,
        record.created_at,
        record.expires_at,
        record.status,
        int(record.background),
        body,
        request,
        record.previous_id,
        dumps(record.job_ids),
        record.seq,
        record.owner,
        record.lease_until,
        record.request_id,
    ]


def from_row(row: Sequence[Any]) -> StoredResponse:
    (rid, key_id, key, created, expires, status, background, body, request, previous, jobs, seq,
     owner, lease, request_id) = row  # fmt: skip
    return StoredResponse(
        id=str(rid),
        key_id=str(key_id),
        key_name=str(key),
        created_at=float(created),
        expires_at=float(expires),
        status=str(status),
        background=bool(background),
        body=json.loads(body),
        request=json.loads(request),
        previous_id=None if previous is None else str(previous),
        job_ids=[str(j) for j in json.loads(jobs)],
        seq=int(seq),
        owner=None if owner is None else str(owner),
        lease_until=float(lease),
        request_id=None if request_id is None else str(request_id),
    )
