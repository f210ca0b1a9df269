"""Rate-limit headers, from a key's quota and a claim's verdict, in both doors' spellings. Pure.

One figure, two spellings: OpenAI's ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``
(reset a duration, ``12s``) and Anthropic's ``anthropic-ratelimit-{requests,tokens}-{limit,
remaining,reset}`` (reset an RFC 3339 instant, ``2026-01-01T00:00:12Z``). Every answer carries
both: a client reads its own and ignores the other.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

from gateway.limits.state import Quota, Verdict


def format_duration(seconds: float) -> str:
    """OpenAI's (Go's) duration format: ``0s``, ``250ms``, ``12s``, ``1m0s``, ``1h2m3.5s``."""
    ms = max(0, round(seconds * 1000))
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def format_instant(epoch_ms: int) -> str:
    """An RFC 3339 instant in UTC, in whole seconds rounded up (a reset is never early)."""
    seconds = math.ceil(epoch_ms / 1000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rate_limit_headers(quota: Quota, verdict: Verdict, now_ms: int) -> dict[str, str]:
    """Limit, remaining and reset for requests and tokens, for the limits that are configured.

    ``reset`` is, as both APIs document it, when the window is back to its initial state
    (every counted request or token has left it): a duration from now for OpenAI, the instant
    (``now_ms`` plus that duration) for Anthropic. Budgets have no standard header.
    """
    headers: dict[str, str] = {}
    windows = (
        ("requests", quota.rpm, verdict.requests_used, verdict.requests_reset_ms),
        ("tokens", quota.tpm, verdict.tokens_used, verdict.tokens_reset_ms),
    )
    for what, limit, used, reset_ms in windows:
        if limit is None:
            continue
        remaining = str(max(0, limit - used))
        headers[f"x-ratelimit-limit-{what}"] = str(limit)
        headers[f"x-ratelimit-remaining-{what}"] = remaining
        headers[f"x-ratelimit-reset-{what}"] = format_duration(reset_ms / 1000)
        headers[f"anthropic-ratelimit-{what}-limit"] = str(limit)
        headers[f"anthropic-ratelimit-{what}-remaining"] = remaining
        headers[f"anthropic-ratelimit-{what}-reset"] = format_instant(now_ms + reset_ms)
    return headers
