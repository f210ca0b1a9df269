"""An OpenAI batch's lines, as their live endpoints take them: planned by that endpoint's own
planner (chat and completions in :mod:`gateway.openai.chat`, Responses in
:mod:`gateway.openai.responses`), their bodies rendered by its own codec, their result lines
in the shapes of OpenAI's output and error files.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import TYPE_CHECKING, Any

from gateway.batches.lines import Planned, nothing
from gateway.config import KeySettings
from gateway.engine.answer import Answer
from gateway.engine.planning import plan_conversation
from gateway.errors import BadRequest, GatewayError
from gateway.http.bodies import validate
from gateway.http.exchange import Exchange
from gateway.http.shapes import openai_body
from gateway.openai.codec import completion_codec
from gateway.openai.protocol import ChatCompletionRequest, CompletionRequest
from gateway.openai.translate import plan_chat, plan_text
from gateway.serving.desk import FrontDesk

if TYPE_CHECKING:
    from gateway.openai.responses.create import ResponseCodec
    from gateway.openai.responses.door import ResponsesDoor

#: The OpenAI endpoints a batch may run.
ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/responses")


async def plan_line(
    front: FrontDesk,
    responses: ResponsesDoor | None,
    key: KeySettings,
    endpoint: str,
    body: Any,
) -> Planned:
    """Plan a line's body as ``endpoint`` would plan it live (a bad body: that endpoint's
    error, raised); in a worker thread, as a live request with schemas would be."""
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.", param="body")
    if body.get("stream"):
        raise BadRequest("Streaming is not supported in a batch.", param="stream")
    catalog, limits = front.catalog(key), front.rt.settings.limits
    fingerprint = front.rt.settings.server.system_fingerprint
    if endpoint == "/v1/chat/completions":
        plan = await asyncio.to_thread(
            lambda: plan_chat(validate(ChatCompletionRequest, body), catalog, limits, None)
        )
        return Planned(plan, completion_codec(fingerprint, "chat", plan), nothing)
    if endpoint == "/v1/completions":
        plan = await asyncio.to_thread(
            lambda: plan_text(validate(CompletionRequest, body), catalog, limits, None)
        )
        return Planned(plan, completion_codec(fingerprint, "text", plan), nothing)
    return await _plan_response(front, responses, key, body)


async def _plan_response(
    front: FrontDesk, door: ResponsesDoor | None, key: KeySettings, body: dict[str, Any]
) -> Planned:
    from gateway.openai.responses.create import ResponseCodec

    if body.get("background"):
        raise BadRequest("Background responses are not supported in a batch.", param="background")
    if door is None:  # pragma: no cover - the app always hands the Responses door over
        raise BadRequest("This gateway does not serve /v1/responses.", param="endpoint")
    prepared = await door.prepare(body, key)
    conversation = prepared.translated.conversation
    catalog, limits = front.catalog(key), front.rt.settings.limits
    plan = await asyncio.to_thread(plan_conversation, conversation, catalog, limits, None)
    codec: ResponseCodec = ResponseCodec(door, prepared, plan, key)

    async def complete(answer: Answer) -> None:
        # The codec's hook takes the request's record; it reads only the answer.
        await codec.complete(answer, Exchange("", "/v1/responses"))

    return Planned(plan, codec, complete)


# ---------------------------------------------------------------------- result lines


def line_id() -> str:
    return "batch_req_" + secrets.token_hex(12)


def output_line(custom_id: str, request_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """A line of the output file: the live endpoint's answer, whole."""
    return {
        "id": line_id(),
        "custom_id": custom_id,
        "response": {"status_code": 200, "request_id": request_id, "body": body},
        "error": None,
    }


def refused_line(custom_id: str, request_id: str, error: GatewayError) -> dict[str, Any]:
    """A line of the error file: what the live endpoint would have answered instead."""
    return {
        "id": line_id(),
        "custom_id": custom_id,
        "response": {
            "status_code": error.status_code,
            "request_id": request_id,
            "body": openai_body(error),
        },
        "error": None,
    }


#: Why a line never ran, as OpenAI says it in the error file.
NOT_RUN = {
    "expired": ("batch_expired", "The line was not run before the completion window ended."),
    "cancelled": ("batch_cancelled", "This line was not executed: the batch was cancelled."),
}  # fmt: skip


def not_run_line(custom_id: str, state: str) -> dict[str, Any]:
    code, message = NOT_RUN[state]
    return {
        "id": line_id(),
        "custom_id": custom_id,
        "response": None,
        "error": {"code": code, "message": message},
    }


class OpenAILines:
    """The OpenAI door's :class:`~gateway.batches.lines.LineDoor`."""

    route = "/v1/batches"
    writes_files = True

    def __init__(self, responses: ResponsesDoor | None = None) -> None:
        #: The Responses door's state (``app.state.responses``): its store and its codec's hooks.
        self.responses = responses

    async def plan(self, front: FrontDesk, key: KeySettings, endpoint: str, body: Any) -> Planned:
        return await plan_line(front, self.responses, key, endpoint, body)

    def output(self, custom_id: str, request_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return output_line(custom_id, request_id, body)

    def refused(self, custom_id: str, request_id: str, error: GatewayError) -> dict[str, Any]:
        return refused_line(custom_id, request_id, error)

    def not_run(self, custom_id: str, state: str) -> dict[str, Any]:
        return not_run_line(custom_id, state)
