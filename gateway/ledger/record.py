"""What the ledger keeps per request, and what a report returns per key and model."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from gateway.db import clean_text


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One request, as the ledger stores it.

    ``time`` is when the request arrived (an aware UTC datetime; a naive one is taken as UTC).
    ``outcome`` is ``"ok"`` or the error code the client got. ``prompt_text`` stays ``None``
    unless the operator turned prompt logging on.
    """

    request_id: str
    time: datetime
    key_name: str
    model: str
    endpoint: str
    stream: bool
    prompt_tokens: int
    completion_tokens: int
    job_ids: tuple[str, ...]
    outcome: str
    status_code: int
    duration_ms: float
    queue_ms: float | None = None
    ttft_ms: float | None = None
    prompt_text: str | None = None
    cached: bool = False  # answered from the response cache
    tokens_saved: int = 0  # tokens the grid did not generate again for it

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


@dataclass(frozen=True, slots=True)
class UsageRow:
    """Usage of one key on one model over a time range; ``errors`` counts outcomes other than ok."""

    key_name: str
    model: str
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    avg_duration_ms: float
    cached: int = 0  # requests answered from the response cache
    tokens_saved: int = 0


#: The outcome of a row written at admission, replaced by the request's own when it ends.
IN_FLIGHT = "in_flight"
#: What an in-flight row left by a process that died says, once a later start-up finds it.
INTERRUPTED = "interrupted"

_TEXT_FIELDS = ("request_id", "key_name", "model", "endpoint", "outcome", "prompt_text")


def sanitized(record: UsageRecord) -> UsageRecord:
    """``record`` with its text fit for the database, so one prompt cannot refuse its row."""
    changes: dict[str, object] = {}
    for name in _TEXT_FIELDS:
        value = getattr(record, name)
        if isinstance(value, str):
            clean = clean_text(value)
            if clean is not value and clean != value:
                changes[name] = clean
    jobs = tuple(clean_text(job) for job in record.job_ids)
    if jobs != record.job_ids:
        changes["job_ids"] = jobs
    return replace(record, **changes) if changes else record  # type: ignore[arg-type]


def to_json(record: UsageRecord) -> dict[str, Any]:
    """``record`` as a JSON-ready dict (the spill file's lines)."""
    data = {name: getattr(record, name) for name in record.__dataclass_fields__}
    data["time"] = record.time.isoformat()
    data["job_ids"] = list(record.job_ids)
    return data


def from_json(data: dict[str, Any]) -> UsageRecord:
    """The record :func:`to_json` wrote."""
    fields = dict(data)
    fields["time"] = datetime.fromisoformat(fields["time"])
    fields["job_ids"] = tuple(fields.get("job_ids") or ())
    return UsageRecord(**fields)
