"""What the database engines share (:mod:`gateway.db` and :mod:`gateway.db_postgres`): the
transaction interface, the timeout every operation runs under, and text made fit to store."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

Row = tuple[Any, ...]

#: Seconds any one operation (acquire included) may take before it is given up.
DEFAULT_TIMEOUT = 10.0


class DatabaseUnavailable(Exception):
    """The database did not answer in time, or the connection to it failed."""


class Tx(Protocol):
    """Statements inside one transaction."""

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; how many rows it changed."""
        ...

    async def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...


#: Statements of one write, each with its rows of parameters (one statement may have one row).
Statements = Sequence[tuple[str, Sequence[Sequence[Any]]]]


_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """``text`` as every database stores it: no NUL (PostgreSQL text refuses it) and no lone
    surrogate (UTF-8 cannot encode one, so no driver can send it); both become U+FFFD."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = _SURROGATE.sub("\ufffd", text)
    return text


def sanitise(value: Any) -> Any:
    """A parameter PostgreSQL's text accepts (see :func:`clean_text`)."""
    return clean_text(value) if isinstance(value, str) else value


@contextlib.asynccontextmanager
async def deadline(seconds: float, what: str) -> AsyncIterator[None]:
    """``seconds`` for the block, then :class:`DatabaseUnavailable`; lost connections too."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        raise DatabaseUnavailable(f"the database did not answer within {seconds:g} s") from None
    except OSError as exc:
        raise DatabaseUnavailable(f"the database is unreachable ({what}): {exc}") from exc
    except Exception as exc:
        if lost_connection(exc):
            raise DatabaseUnavailable(f"the database connection failed ({what}): {exc}") from exc
        raise


async def within(trip: asyncio.Future[T], seconds: float, what: str) -> T:
    """The result of ``trip``, work already handed to another thread, waited for at most
    ``seconds`` (then :class:`DatabaseUnavailable`, as :func:`deadline` says it). The trip is
    not cancelled with its caller or by the timeout: it ends in its thread all the same.

    :func:`deadline` around ``asyncio.shield`` does the same with a timeout scope, a context
    manager and a shielding future: a one-row SQLite write took 129k instructions that way,
    SQLite's own work included, and takes 89k this way (callgrind)."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()

    def wake(_: object) -> None:
        if not waiter.done():
            waiter.set_result(None)

    trip.add_done_callback(wake)
    timer = loop.call_later(seconds, wake, None)
    try:
        await waiter
    finally:
        timer.cancel()
        if not trip.done():  # given up (cancelled, or the timer): its outcome is nobody's
            trip.remove_done_callback(wake)
            trip.add_done_callback(_retrieved)
    if not trip.done():
        raise DatabaseUnavailable(f"the database did not answer within {seconds:g} s")
    try:
        return trip.result()
    except OSError as exc:
        raise DatabaseUnavailable(f"the database is unreachable ({what}): {exc}") from exc


def _retrieved(trip: asyncio.Future[Any]) -> None:
    if not trip.cancelled():
        trip.exception()  # looked at: no "exception was never retrieved" for an abandoned trip


def lost_connection(exc: Exception) -> bool:
    try:
        import asyncpg
    except ImportError:  # pragma: no cover - a dependency
        return False
    return isinstance(
        exc,
        asyncpg.PostgresConnectionError
        | asyncpg.InterfaceError
        | asyncpg.CannotConnectNowError
        | asyncpg.exceptions.ConnectionDoesNotExistError,
    )
