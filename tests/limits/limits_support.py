"""Helpers shared by the limits tests."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from gateway.config import KeySettings
from gateway.limits import LimitStore

REDIS_URL = os.environ.get("REDIS_URL")

StoreFactory = Callable[[], LimitStore]
"""Makes stores that share one state (one MemoryStore, or RedisStores on one prefix)."""


class FakeClock:
    """Epoch seconds that only move when a test says so."""

    def __init__(self, start: datetime) -> None:
        self.now = start.timestamp()

    def __call__(self) -> float:
        return self.now

    @classmethod
    def at(cls, iso: str) -> FakeClock:
        return cls(datetime.fromisoformat(iso))

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def set(self, moment: datetime) -> None:
        self.now = moment.timestamp()


def make_key(name: str = "alice", **limits: Any) -> KeySettings:
    return KeySettings(name=name, key="sk-test-0123456789", upstream_token="upstream", **limits)


class TcpProxy:
    """A loopback TCP proxy to Redis that a test can stop, restart, or turn into a black hole."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.blackhole = False
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and cut every open connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def url(self, template: str) -> str:
        parts = urlsplit(template)
        netloc = f"127.0.0.1:{self.port}"
        if parts.username or parts.password:
            netloc = f"{parts.netloc.rsplit('@', 1)[0]}@{netloc}"
        return urlunsplit(parts._replace(netloc=netloc))

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if self.blackhole:
                await asyncio.Event().wait()
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            self._writers.add(up_writer)
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            writer.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if self.blackhole:
                    await asyncio.Event().wait()
                writer.write(data)
                await writer.drain()
        finally:
            writer.transport.abort()
            self._writers.discard(writer)
