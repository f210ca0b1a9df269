"""Signal plumbing: the drain starts on the first SIGTERM, uvicorn's handler still runs, and a
stop that uvicorn re-raises after a clean shutdown exits with status 0."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from types import FrameType

import pytest

from gateway.ops.shutdown import drain_on_signal, exit_zero_after_signal


@pytest.fixture
def saved_handlers() -> Iterator[None]:
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.mark.usefixtures("saved_handlers")
async def test_drain_starts_once_and_chains_to_the_previous_handler() -> None:
    seen: list[int] = []

    def uvicorn_like(signum: int, frame: FrameType | None) -> None:
        seen.append(signum)

    signal.signal(signal.SIGTERM, uvicorn_like)
    drains: list[bool] = []
    with drain_on_signal(lambda: drains.append(True)):
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGTERM)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    assert drains == [True]
    assert seen == [signal.SIGTERM, signal.SIGTERM]
    assert signal.getsignal(signal.SIGTERM) is uvicorn_like


@pytest.mark.usefixtures("saved_handlers")
def test_a_signal_outside_uvicorn_exits_with_status_zero() -> None:
    def before(signum: int, frame: FrameType | None) -> None:
        raise AssertionError("the previous handler must not run inside the context")

    signal.signal(signal.SIGTERM, before)
    with pytest.raises(SystemExit) as info, exit_zero_after_signal():
        signal.raise_signal(signal.SIGTERM)
    assert info.value.code == 0
    assert signal.getsignal(signal.SIGTERM) is before
