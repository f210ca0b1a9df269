"""Models under their Ollama names: ``/api/tags``, ``/api/show``, ``/api/ps`` and the lookup
of a request's ``model`` by Ollama tag or by gateway name.

The grid's models are Ollama models, so each is listed under its upstream ``tag`` (Ollama
writes a tag without ``:`` as ``name:latest``); ``details`` come from ``models[].details`` in
the config. Sizes and digests describe files on the volunteer nodes, which the gateway never
sees: sizes are 0 and digests a stable hash of the model's name and tag.
"""

from __future__ import annotations

import hashlib
from typing import Any

from gateway.config import ModelSettings
from gateway.engine.catalog import ModelCatalog
from gateway.errors import NotFound

#: A fixed date: the config has no modification times, so answers stay stable.
MODIFIED_AT = "2024-05-06T00:00:00Z"


def ollama_name(tag: str) -> str:
    """``llama2`` -> ``llama2:latest``, as Ollama names a model pulled without a tag."""
    return tag if ":" in tag else f"{tag}:latest"


def resolve(catalog: ModelCatalog, name: str) -> ModelSettings:
    """The model ``name`` means to this key: a gateway name or alias first, then an Ollama tag
    (``:latest`` optional). A model the key may not use is as unknown as a missing one."""
    try:
        return catalog.resolve(name)
    except NotFound:
        wanted = ollama_name(name)
        for model in catalog.models:
            if ollama_name(model.tag) == wanted:
                return model
        raise


def listed_names(catalog: ModelCatalog) -> list[tuple[str, ModelSettings]]:
    """Each model once, under its Ollama tag (under its gateway name when two share a tag)."""
    out: list[tuple[str, ModelSettings]] = []
    seen: set[str] = set()
    for model in catalog.models:
        name = ollama_name(model.tag)
        if name in seen:
            name = ollama_name(model.name)
        seen.add(name)
        out.append((name, model))
    return out


def digest(model: ModelSettings) -> str:
    return hashlib.sha256(f"{model.name}\0{model.tag}".encode()).hexdigest()


def details(model: ModelSettings) -> dict[str, Any]:
    known = model.details
    family = known.family if known is not None else None
    return {
        "parent_model": "",
        "format": known.format if known is not None else "gguf",
        "family": family or "",
        "families": [family] if family else None,
        "parameter_size": (known.parameter_size if known is not None else None) or "",
        "quantization_level": (known.quantization_level if known is not None else None) or "",
    }


def tags(catalog: ModelCatalog) -> dict[str, Any]:
    """``GET /api/tags``: every model the key may use."""
    return {
        "models": [
            {
                "name": name,
                "model": name,
                "modified_at": MODIFIED_AT,
                "size": 0,
                "digest": digest(model),
                "details": details(model),
            }
            for name, model in listed_names(catalog)
        ]
    }


def capabilities(model: ModelSettings) -> list[str]:
    """Every model here writes text and may call tools (the gateway renders the instructions)."""
    return ["completion", "tools"]


def show(model: ModelSettings) -> dict[str, Any]:
    """``POST /api/show``: what the gateway knows of one model."""
    info = details(model)
    architecture = info["family"] or "unknown"
    model_info: dict[str, Any] = {"general.architecture": architecture}
    if model.context_window is not None:
        model_info[f"{architecture}.context_length"] = model.context_window
    parameters = f"num_predict {model.max_tokens}" if model.max_tokens is not None else ""
    return {
        "modelfile": (
            f"# Served by the gateway from the grid as '{model.name}'.\n"
            f"# Prompts are rendered by the gateway with its '{model.template}' template.\n"
            f"FROM {model.tag}\n"
        ),
        "parameters": parameters,
        "template": "",
        "details": info,
        "model_info": model_info,
        "capabilities": capabilities(model),
        "modified_at": MODIFIED_AT,
    }
