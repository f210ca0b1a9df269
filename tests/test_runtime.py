"""The end of a request in process (app + embedded emulator): the access log line, with the
prompt only when the operator turned ``logging.log_prompts`` on."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import httpx
import pytest

from gateway.config import Settings
from tests.inprocess import client, started

PROMPT = "the secret recipe is [[emulate:reply fine]] [[emulate:queue 0]]"


@contextlib.asynccontextmanager
async def answered(settings: Settings) -> AsyncIterator[httpx.Response]:
    """One chat request answered by a running app (lifespan and all)."""
    async with started(settings) as app, client(app) as http:
        yield await http.post(
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {settings.emulator.demo_key}"},
            json={"model": "gemma-2b", "messages": [{"role": "user", "content": PROMPT}]},
        )


def demo(log_prompts: bool) -> Settings:
    return Settings.model_validate(
        {
            "emulator": {"queue_seconds": 0, "words_per_second": 200},
            "ledger": {"url": "sqlite:///:memory:"},
            "logging": {"log_prompts": log_prompts},
        }
    )


def access_record(caplog: pytest.LogCaptureFixture) -> logging.LogRecord:
    (record,) = [r for r in caplog.records if r.name == "gateway.access"]
    return record


@pytest.mark.parametrize("log_prompts", [False, True])
async def test_prompt_is_logged_only_when_turned_on(
    log_prompts: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.access")
    async with answered(demo(log_prompts)) as response:
        assert response.status_code == 200
        assert response.json()["choices"][0]["message"]["content"] == "fine"
    record = access_record(caplog)
    assert getattr(record, "key", None) == "demo" and getattr(record, "status", None) == 200
    if log_prompts:
        assert "the secret recipe" in getattr(record, "prompt", "")
    else:
        assert not hasattr(record, "prompt")
        assert "secret recipe" not in caplog.text
