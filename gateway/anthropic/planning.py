"""A Messages request's plan: what ``POST /v1/messages`` and a Message Batch's requests share."""

from __future__ import annotations

from typing import Any

from gateway.anthropic.protocol import MessagesRequest
from gateway.anthropic.translate import conversation
from gateway.config import LimitSettings
from gateway.engine.catalog import ModelCatalog
from gateway.engine.planning import Plan, plan_conversation
from gateway.http.bodies import validate


def plan_message(
    data: Any, catalog: ModelCatalog, limits: LimitSettings, timeout: float | None
) -> Plan:
    wire = validate(MessagesRequest, data)
    catalog.resolve(wire.model)  # an unknown model is a 404 before the content is looked at
    return plan_conversation(conversation(wire), catalog, limits, timeout)
