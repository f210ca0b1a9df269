"""What the ledger keeps per request, and what a report returns per key and model."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


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
