"""An Anthropic Message Batch's requests, as ``POST /v1/messages`` takes them: planned by the
Messages door's own planner, their messages rendered by its own codec, their results in the
shapes of Anthropic's results file (``succeeded``, ``errored``, ``canceled``, ``expired``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.anthropic.answers import MessageCodec
from gateway.anthropic.errors import error_body
from gateway.anthropic.planning import plan_message
from gateway.batches.lines import Planned, nothing
from gateway.config import KeySettings
from gateway.errors import BadRequest, GatewayError
from gateway.serving.desk import FrontDesk

#: Anthropic's names of why a request never ran.
NOT_RUN = {"cancelled": "canceled", "expired": "expired"}


class AnthropicLines:
    """The Anthropic door's :class:`~gateway.batches.lines.LineDoor`."""

    route = "/v1/messages/batches"
    writes_files = False

    async def plan(self, front: FrontDesk, key: KeySettings, endpoint: str, body: Any) -> Planned:
        if isinstance(body, dict) and body.get("stream"):
            raise BadRequest("Streaming is not supported in a message batch.", param="stream")
        catalog, limits = front.catalog(key), front.rt.settings.limits
        plan = await asyncio.to_thread(plan_message, body, catalog, limits, None)
        return Planned(plan, MessageCodec(plan.model.name, plan.prompt_tokens), nothing)

    def output(self, custom_id: str, request_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return {"custom_id": custom_id, "result": {"type": "succeeded", "message": body}}

    def refused(self, custom_id: str, request_id: str, error: GatewayError) -> dict[str, Any]:
        return {
            "custom_id": custom_id,
            "result": {"type": "errored", "error": error_body(error, request_id)},
        }

    def not_run(self, custom_id: str, state: str) -> dict[str, Any]:
        return {"custom_id": custom_id, "result": {"type": NOT_RUN[state]}}
