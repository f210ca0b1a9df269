"""A request lets go of its concurrency slot *before* its answer's last bytes are written.

A client with ``max_concurrent: 1`` that sends its next request the moment it has read the
answer (``[DONE]``, or the end of the JSON body) must never find its previous slot still
taken. Checked in process (app + embedded emulator): at the instant the app sends the last
bytes, a fresh admission for the same key must already succeed.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.types import Message, Receive, Scope, Send

from gateway.config import Settings
from gateway.runtime import Runtime
from tests.inprocess import client, started

SOLO_KEY = "sk-test-solo-0123456789"
PROMPT = "[[emulate:reply fine words]] [[emulate:queue 0]]"


def settings() -> Settings:
    return Settings.model_validate(
        {
            "emulator": {"queue_seconds": 0, "words_per_second": 200},
            "ledger": {"url": "sqlite:///:memory:"},
            "keys": [
                {
                    "name": "solo",
                    "key": SOLO_KEY,
                    "upstream_token": "demo-upstream-token",
                    "max_concurrent": 1,
                }
            ],
        }
    )


class LastBytesProbe:
    """Wraps the app; when a final body message goes out, tries to admit the same key again."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.seen: list[str] = []  # "free" or the refusal's code, one per final message

    def _runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    async def _probe(self) -> None:
        runtime = self._runtime()
        key = runtime.keys.authenticate({"authorization": f"Bearer {SOLO_KEY}"})
        try:
            admission = await runtime.limiter.admit(key, "gemma-2b", 1)
        except Exception as refused:
            self.seen.append(getattr(refused, "code", None) or type(refused).__name__)
            return
        await admission.release(1)
        self.seen.append("free")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def probing_send(message: Message) -> None:
            if message["type"] == "http.response.body":
                body = message.get("body", b"")
                last = not message.get("more_body", False)
                if (b"[DONE]" in body) or (last and body):
                    await self._probe()
            await send(message)

        await self.app(scope, receive, probing_send)


@contextlib.asynccontextmanager
async def running() -> AsyncIterator[tuple[httpx.AsyncClient, LastBytesProbe]]:
    async with started(settings()) as app:
        probe = LastBytesProbe(app)
        async with client(probe) as http:
            yield http, probe


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "gemma-2b", "messages": [{"role": "user", "content": PROMPT}], **extra}


HEADERS = {"authorization": f"Bearer {SOLO_KEY}"}


@pytest.mark.parametrize(
    "body",
    [
        chat(),
        chat(stream=True),
        chat(stream=True, stream_options={"include_usage": True}),
        chat(max_tokens=0),  # refused by the plan: no slot was ever taken
    ],
    ids=["json", "stream", "stream-with-usage", "bad-request"],
)
async def test_the_slot_is_free_when_the_last_bytes_go_out(body: dict[str, Any]) -> None:
    async with running() as (client, probe):
        answer = await client.post("/v1/chat/completions", json=body, headers=HEADERS)
        if body.get("max_tokens") == 0:
            assert answer.status_code == 400
        else:
            assert answer.status_code == 200, answer.text
            assert "fine" in answer.text
        assert probe.seen == ["free"]


async def test_an_upstream_failure_before_the_first_byte_frees_the_slot_first() -> None:
    async with running() as (client, probe):
        for stream in (False, True):
            body = chat(stream=stream)
            body["messages"][0]["content"] = "[[emulate:fail]] [[emulate:queue 0]]"
            answer = await client.post("/v1/chat/completions", json=body, headers=HEADERS)
            assert answer.status_code == 502, answer.text
        assert probe.seen == ["free", "free"]
