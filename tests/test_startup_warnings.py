"""What an operator's log says when a dependency is wrong or down (issue 27, item 6): a Redis
URL that does not answer is said at start-up; a database that is down is one line, not a
traceback every few seconds."""

from __future__ import annotations

import asyncio
import logging
import socket
from types import SimpleNamespace
from typing import Any, cast

import pytest

from gateway.config import Settings
from gateway.openai.responses.background import Background
from tests.inprocess import started


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_a_redis_url_that_does_not_answer_is_said_at_start_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.runtime")
    port = closed_port()
    settings = Settings.model_validate(
        {
            "ledger": {"url": "sqlite:///:memory:"},
            "redis": {"url": f"redis://:secret-password@127.0.0.1:{port}/3"},
        }
    )
    async with started(settings):
        pass
    (line,) = [r.getMessage() for r in caplog.records if r.name == "gateway.runtime"]
    assert f"redis.url redis://127.0.0.1:{port}/3 does not answer at start-up" in line
    assert "secret-password" not in caplog.text


class DownStore:
    async def purge(self, now: float) -> None:
        raise ConnectionRefusedError("connection refused by 127.0.0.1:5432")


async def test_a_database_that_is_down_is_one_line_not_a_traceback_per_scan(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.responses")
    background = Background(cast(Any, DownStore()), lease=0.6, replan=cast(Any, None))
    background.start(cast(Any, SimpleNamespace(shutting_down=False)))
    await asyncio.sleep(0.9)  # four or five scans
    await background.aclose()
    records = [r for r in caplog.records if "background scan" in r.getMessage()]
    assert len(records) == 1, [r.getMessage() for r in records]
    assert records[0].exc_info is None
    assert "connection refused by 127.0.0.1:5432" in records[0].getMessage()
