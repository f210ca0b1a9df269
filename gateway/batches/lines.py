"""What a door gives the batch runner for its lines (:class:`LineDoor`), and what it gets.

The runner knows no wire format: each door (``gateway/openai/batch_lines.py``,
``gateway/anthropic/batch_lines.py``) plans a line with its live endpoint's own planner and
writes its result lines in its own shapes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.config import KeySettings
from gateway.engine.answer import Answer
from gateway.engine.planning import Plan
from gateway.errors import GatewayError
from gateway.serving.answers import Codec
from gateway.serving.desk import FrontDesk


@dataclass(slots=True)
class Planned:
    plan: Plan
    codec: Codec
    #: The answer is whole: what the endpoint does then (a Responses line stores itself).
    complete: Callable[[Answer], Awaitable[None]]


async def nothing(_: Answer) -> None:
    return None


class LineDoor(Protocol):
    """A door's part in running its batches' lines."""

    #: The ledger's endpoint for a line (one row per line, marked as a batch by it).
    route: str
    #: Whether a finished batch's results become files (OpenAI's output and error files) or
    #: are read from the lines themselves (Anthropic's results).
    writes_files: bool

    async def plan(self, front: FrontDesk, key: KeySettings, endpoint: str, body: Any) -> Planned:
        """Plan the line as the live endpoint would; a bad body raises its error."""
        ...

    def output(self, custom_id: str, request_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """The result of a line answered (``body``: the live endpoint's answer)."""
        ...

    def refused(self, custom_id: str, request_id: str, error: GatewayError) -> dict[str, Any]:
        """The result of a line refused or failed (the live endpoint's error)."""
        ...

    def not_run(self, custom_id: str, state: str) -> dict[str, Any]:
        """The result of a line never run (``cancelled`` or ``expired``)."""
        ...
