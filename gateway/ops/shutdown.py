"""Signals. SIGTERM/SIGINT: stop being ready, let streams finish, end the rest cleanly.
SIGHUP: re-read keys and models.

uvicorn already stops accepting connections and waits ``timeout_graceful_shutdown`` for
requests in flight, then cancels them mid-stream. We chain onto its signal handler to start a
drain first: /readyz turns unready at once, and any request still running shortly before the
grace period ends gets a proper final error event instead of a cut connection.

After a clean shutdown uvicorn re-raises the signal it caught, so that the default action
(death by SIGTERM, exit status 143) would follow. :func:`exit_zero_after_signal` turns that
into exit status 0: a requested stop that drained properly is a success for a supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any, NoReturn

from gateway.config import ConfigError

logger = logging.getLogger("gateway.shutdown")
admin_log = logging.getLogger("gateway.admin")

#: Seconds before uvicorn's own deadline at which remaining requests are ended by us.
FINAL_EVENT_MARGIN = 1.0


@contextlib.contextmanager
def drain_on_signal(on_drain: Callable[[], None]) -> Iterator[None]:
    """Call ``on_drain`` in the event loop on the first SIGTERM/SIGINT, then chain to the
    handler installed before (uvicorn's), so its own shutdown proceeds as usual."""
    loop = asyncio.get_running_loop()
    previous: dict[int, Any] = {}
    fired = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal fired
        if not fired:
            fired = True
            loop.call_soon_threadsafe(on_drain)
        chained = previous.get(signum)
        if callable(chained):
            chained(signum, frame)
        elif chained == signal.SIG_DFL:
            signal.default_int_handler(signum, frame)

    for sig in (int(signal.SIGTERM), int(signal.SIGINT)):
        try:
            previous[sig] = signal.getsignal(sig)
            signal.signal(sig, handler)
        except (ValueError, OSError):  # not the main thread: tests, embedded use
            previous.pop(sig, None)
    try:
        yield
    finally:
        for sig, old in previous.items():
            with contextlib.suppress(ValueError, OSError):
                signal.signal(sig, old)


@contextlib.contextmanager
def exit_zero_after_signal() -> Iterator[None]:
    """Around ``uvicorn.run``: SIGTERM/SIGINT outside uvicorn's own handling exit with status 0.

    uvicorn installs its handlers while it serves and restores ours before re-raising the
    signal it caught; a signal arriving before uvicorn took over ends the process at once.
    """
    previous: dict[int, Any] = {}

    def stop(signum: int, frame: FrameType | None) -> NoReturn:
        raise SystemExit(0)

    for sig in (int(signal.SIGTERM), int(signal.SIGINT)):
        with contextlib.suppress(ValueError, OSError):  # not the main thread: leave it
            previous[sig] = signal.signal(sig, stop)
    try:
        yield
    finally:
        for sig, old in previous.items():
            with contextlib.suppress(ValueError, OSError, TypeError):
                signal.signal(sig, old)


@contextlib.contextmanager
def reload_on_sighup(reload: Callable[[], object]) -> Iterator[None]:
    """Run ``reload`` in the event loop on SIGHUP (keys and models re-read from the file)."""
    loop = asyncio.get_running_loop()

    def on_hup() -> None:
        try:
            reload()
        except ConfigError as exc:  # the operator's mistake: the reason, not a traceback
            admin_log.error("config reload on SIGHUP failed; keeping the current config: %s", exc)
        except Exception:
            logger.exception("config reload on SIGHUP failed; keeping the current config")

    try:
        loop.add_signal_handler(signal.SIGHUP, on_hup)
    except (ValueError, NotImplementedError, RuntimeError):
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
