"""Pure pieces: OpenAI's duration format, the headers, UTC calendar periods."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.limits import (
    Quota,
    Verdict,
    day_period,
    format_duration,
    month_period,
    rate_limit_headers,
)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (-3, "0s"),
        (0.0004, "0s"),
        (0.02, "20ms"),
        (0.999, "999ms"),
        (1, "1s"),
        (12, "12s"),
        (12.5, "12.5s"),
        (59.881, "59.881s"),
        (60, "1m0s"),
        (90.25, "1m30.25s"),
        (3600, "1h0m0s"),
        (3723, "1h2m3s"),
        (86400, "24h0m0s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_headers_only_for_configured_limits() -> None:
    verdict = Verdict(None, None, requests_used=3, requests_reset_ms=45_000, tokens_used=700,
                      tokens_reset_ms=1_500)  # fmt: skip
    now = ms(2026, 1, 2, 3, 4, 5) + 200
    assert rate_limit_headers(Quota(max_concurrent=2, daily_tokens=10), verdict, now) == {}
    assert rate_limit_headers(Quota(rpm=10, tpm=1000), verdict, now) == {
        "x-ratelimit-limit-requests": "10",
        "x-ratelimit-remaining-requests": "7",
        "x-ratelimit-reset-requests": "45s",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "300",
        "x-ratelimit-reset-tokens": "1.5s",
        # Anthropic's spelling of the same figures; the reset an instant, rounded up.
        "anthropic-ratelimit-requests-limit": "10",
        "anthropic-ratelimit-requests-remaining": "7",
        "anthropic-ratelimit-requests-reset": "2026-01-02T03:04:51Z",
        "anthropic-ratelimit-tokens-limit": "1000",
        "anthropic-ratelimit-tokens-remaining": "300",
        "anthropic-ratelimit-tokens-reset": "2026-01-02T03:04:07Z",
    }
    over = Verdict("tokens", None, requests_used=0, tokens_used=1200)
    headers = rate_limit_headers(Quota(tpm=1000), over, now)
    assert headers["x-ratelimit-remaining-tokens"] == "0"
    assert headers["anthropic-ratelimit-tokens-remaining"] == "0"
    assert headers["anthropic-ratelimit-tokens-reset"] == "2026-01-02T03:04:06Z"


def ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp() * 1000)


def test_periods() -> None:
    now = ms(2024, 2, 29, 23, 59, 59)
    assert day_period(now).name == "2024-02-29"
    assert day_period(now).ends_ms == ms(2024, 3, 1)
    assert month_period(now).name == "2024-02"
    assert month_period(now).ends_ms == ms(2024, 3, 1)
    assert day_period(ms(2024, 3, 1)).name == "2024-03-01"
    december = month_period(ms(2023, 12, 31, 12))
    assert (december.name, december.ends_ms) == ("2023-12", ms(2024, 1, 1))
