"""Per-key limits and budgets, in memory or shared across replicas through Redis."""

from gateway.limits.headers import format_duration, rate_limit_headers
from gateway.limits.limiter import Admission, FailurePolicy, Limiter, quota_of
from gateway.limits.memory import MemoryStore
from gateway.limits.state import (
    Claim,
    LimitStore,
    Period,
    Quota,
    Refusal,
    StoreUnavailable,
    Verdict,
    day_period,
    month_period,
)

__all__ = [
    "Admission",
    "Claim",
    "FailurePolicy",
    "LimitStore",
    "Limiter",
    "MemoryStore",
    "Period",
    "Quota",
    "Refusal",
    "StoreUnavailable",
    "Verdict",
    "day_period",
    "format_duration",
    "month_period",
    "quota_of",
    "rate_limit_headers",
]
