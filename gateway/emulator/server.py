"""Serving the emulator: in-process beside the gateway, or on its own from the CLI."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import socket
from collections.abc import Generator
from types import TracebackType
from typing import TYPE_CHECKING

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.emulator.app import EmulatedConnectionReset, create_emulator_app
from gateway.emulator.engine import EmulatorConfig, Engine

if TYPE_CHECKING:
    from gateway.config import EmulatorSettings

DEFAULT_PORT = 8090


class DropOnReset:
    """ASGI wrapper: the ``reset`` fault ends quietly, so uvicorn just closes the connection
    (it logs one line about the incomplete response instead of a traceback)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with contextlib.suppress(EmulatedConnectionReset):
            await self.app(scope, receive, send)


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its host process."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class _NotFromTask(logging.Filter):
    """Drops the records logged by one task: the embedded server's own start and stop lines
    ("Started server process", "Shutting down"), which would repeat the gateway's."""

    def __init__(self, task: asyncio.Task[None]) -> None:
        super().__init__()
        self.task = task

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            return asyncio.current_task() is not self.task
        except RuntimeError:  # no running loop: another thread's record
            return True


class EmbeddedEmulator:
    """The emulator on a real socket inside the running event loop.

    ``port=0`` picks a free port; ``base_url`` is known once started::

        async with EmbeddedEmulator(EmulatorConfig()) as emulator:
            client = httpx.AsyncClient(base_url=emulator.base_url)
    """

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        engine: Engine | None = None,
    ) -> None:
        self.engine = engine if engine is not None else Engine(config)
        self.host = host
        self.port = port
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._base_url: str | None = None
        self._quiet: _NotFromTask | None = None

    @classmethod
    def from_settings(cls, settings: EmulatorSettings) -> EmbeddedEmulator:
        """The emulator ``gateway serve`` runs when no upstream is configured."""
        return cls(EmulatorConfig.from_settings(settings), host=settings.host, port=settings.port)

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the running emulator (jobs are at ``{base_url}/jobs``)."""
        if self._base_url is None:
            raise RuntimeError("the emulator is not started")
        return self._base_url

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("the emulator is already started")
        sock = _bind(self.host, self.port)
        host, port = sock.getsockname()[:2]
        app = DropOnReset(create_emulator_app(engine=self.engine))
        config = uvicorn.Config(
            app,
            log_config=None,
            log_level=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        self._server = _QuietServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        self._quiet = _NotFromTask(self._task)
        logging.getLogger("uvicorn.error").addFilter(self._quiet)
        while not self._server.started:
            if self._task.done():
                sock.close()
                self._task.result()
                raise RuntimeError("the emulator stopped while starting")
            await asyncio.sleep(0.005)
        self.port = port
        shown = f"[{host}]" if ":" in host else host
        self._base_url = f"http://{shown}:{port}"

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            await self._task
        finally:
            if self._quiet is not None:
                logging.getLogger("uvicorn.error").removeFilter(self._quiet)
            self._server = self._task = self._base_url = self._quiet = None

    async def __aenter__(self) -> EmbeddedEmulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()


def run_emulator(host: str, port: int, config: EmulatorConfig) -> None:
    """Serve the emulator until interrupted (the ``gateway emulator`` command)."""
    app = DropOnReset(create_emulator_app(config))
    uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, access_log=False, lifespan="off")
    ).run()


def add_emulator_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``gateway emulator`` options; read them back with :func:`config_from_args`."""
    defaults = EmulatorConfig()
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help="port (default: %(default)s; 0: any free one)",
    )
    parser.add_argument(
        "--token",
        action="append",
        dest="tokens",
        metavar="TOKEN",
        help="accepted bearer token (repeatable; default: any non-empty token)",
    )
    parser.add_argument(
        "--queue-seconds",
        type=float,
        default=defaults.queue_seconds,
        help="how long a job waits before it runs (default: %(default)s)",
    )
    parser.add_argument(
        "--words-per-second",
        type=float,
        default=defaults.words_per_second,
        help="how fast a running job's log grows (default: %(default)s)",
    )
    parser.add_argument(
        "--finished-status",
        default=defaults.finished_status,
        help="the status an ended job reports (default: %(default)s)",
    )
    parser.add_argument(
        "--words",
        type=int,
        default=defaults.default_words,
        help="words of a default reply (default: %(default)s)",
    )
    parser.add_argument(
        "--retention-seconds",
        type=float,
        default=defaults.retention_seconds,
        help="how long ended jobs stay visible, in seconds (default: %(default)s)",
    )


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    """An :class:`EmulatorConfig` from options added by :func:`add_emulator_arguments`."""
    return EmulatorConfig(
        tokens=frozenset(args.tokens) if args.tokens else None,
        queue_seconds=args.queue_seconds,
        words_per_second=args.words_per_second,
        finished_status=args.finished_status,
        default_words=args.words,
        retention_seconds=args.retention_seconds,
    )


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock
