"""The Responses API request as the gateway reads it.

Only the fields it acts on are typed; items, tools and formats stay plain JSON and are read
(with errors naming the item) by :mod:`.translate`. Unknown fields are accepted: clients send
many, and the ones not forwarded are reported in the access log.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")

    @model_validator(mode="before")
    @classmethod
    def _null_means_default(cls, data: Any) -> Any:
        """OpenAI treats an explicit ``null`` like a missing field; so do we."""
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data


class CreateResponse(_Lenient):
    model: str = Field(min_length=1)
    input: str | list[Any] | None = None
    instructions: str | list[Any] | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    tools: list[Any] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: dict[str, Any] | None = None
    metadata: dict[str, str] | None = None
    store: bool = True
    background: bool = False
    stream: bool = False
    previous_response_id: str | None = None
    temperature: float | None = None
    top_p: float | None = None
