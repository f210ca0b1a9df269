"""OpenAI's ``x-ratelimit-*`` headers, from a key's quota and a claim's verdict. Pure."""

from __future__ import annotations

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


def rate_limit_headers(quota: Quota, verdict: Verdict) -> dict[str, str]:
    """Limit, remaining and reset for requests and tokens, for the limits that are configured.

    ``reset`` is, as OpenAI documents it, the time until the window is back to its initial state
    (every counted request or token has left it). Budgets have no standard header.
    """
    headers: dict[str, str] = {}
    if quota.rpm is not None:
        headers["x-ratelimit-limit-requests"] = str(quota.rpm)
        headers["x-ratelimit-remaining-requests"] = str(max(0, quota.rpm - verdict.requests_used))
        headers["x-ratelimit-reset-requests"] = format_duration(verdict.requests_reset_ms / 1000)
    if quota.tpm is not None:
        headers["x-ratelimit-limit-tokens"] = str(quota.tpm)
        headers["x-ratelimit-remaining-tokens"] = str(max(0, quota.tpm - verdict.tokens_used))
        headers["x-ratelimit-reset-tokens"] = format_duration(verdict.tokens_reset_ms / 1000)
    return headers
