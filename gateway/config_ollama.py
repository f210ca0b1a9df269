"""The Ollama door's settings (``ollama:`` and ``models[].details``), kept beside config.py.

Read and validated with the rest of the config by :mod:`gateway.config`, which re-exports
them; this module imports nothing of the gateway's, so no layer is crossed.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelDetailsSettings(_Frozen):
    """What Ollama's ``/api/tags`` and ``/api/show`` say about a model (``details``)."""

    family: str | None = Field(None, min_length=1)
    parameter_size: str | None = Field(None, min_length=1)
    quantization_level: str | None = Field(None, min_length=1)
    format: str = Field("gguf", min_length=1)


class OllamaSettings(_Frozen):
    """The Ollama door on a listen address of its own, for tools that cannot send a key."""

    host: str = "127.0.0.1"
    port: int | None = Field(None, ge=0, le=65535)  # None: off (the door is on the API port)
    #: A gateway key for requests on that address that send none (anyone who can reach the
    #: address then spends this key's limits and budget: keep it on loopback).
    default_key: str | None = Field(None, min_length=8, repr=False)

    @field_validator("default_key", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _key_needs_port(self) -> OllamaSettings:
        if self.default_key is not None and self.port is None:
            raise ValueError("default_key applies only to ollama.port: set the port too")
        return self
