"""The models clients may name: canonical names, aliases, and each model's prompt template.

An alias with ``*``, ``?`` or ``[`` is a glob pattern (``claude-*``), so an operator can send
every model name a tool may ask for to one served model. Exact names always win; patterns
are tried in config order, only on names of a sane length.
"""

from __future__ import annotations

import copy
import fnmatch
import re
from collections.abc import Collection, Sequence

from gateway.config import ModelSettings
from gateway.engine.prompts import PromptTemplate, template_for
from gateway.errors import NotFound

#: Context windows of known upstream tags, in tokens (the models' published figures); a tag is
#: looked up whole, then by its family (the part before ``:``). Others get
#: :data:`FALLBACK_CONTEXT_WINDOW`; ``models[].context_window`` overrides both.
DEFAULT_CONTEXT_WINDOWS: dict[str, int] = {
    "gemma": 8192,
    "gemma:2b": 8192,
    "gemma:7b": 8192,
    "gemma2": 8192,
    "gemma3": 131072,
    "gemma3:1b": 32768,
    "llama2": 4096,
    "llama2-uncensored": 4096,
    "llama2-chinese": 4096,
    "codellama": 16384,
    "llama3": 8192,
    "llama3.1": 131072,
    "llama3.2": 131072,
    "llama3.3": 131072,
    "mistral": 32768,
    "mixtral": 32768,
    "phi": 2048,
    "phi3": 4096,
    "phi4": 16384,
    "qwen": 32768,
    "qwen2": 32768,
    "qwen2.5": 32768,
    "qwen3": 40960,
    "tinyllama": 2048,
    "orca-mini": 2048,
    "vicuna": 2048,
    "zephyr": 32768,
    "deepseek-r1": 131072,
}

#: The window of a model whose tag is not known: modest, so a prompt fitted to it fits most.
FALLBACK_CONTEXT_WINDOW = 8192


def context_window(model: ModelSettings) -> int:
    """The model's context window: configured, else its tag's default, else the fallback."""
    if model.context_window is not None:
        return model.context_window
    tag = model.tag.lower()
    known = DEFAULT_CONTEXT_WINDOWS.get(tag) or DEFAULT_CONTEXT_WINDOWS.get(tag.split(":")[0])
    return known or FALLBACK_CONTEXT_WINDOW


#: Longer names are never matched against patterns (no client sends one; bounds the work).
MAX_PATTERN_INPUT = 256


def is_pattern(alias: str) -> bool:
    return any(c in alias for c in "*?[")


def allows(allowed: Collection[str] | None, model: ModelSettings) -> bool:
    """Whether a key allowed ``allowed`` may use ``model``: naming it or any alias allows it."""
    return allowed is None or any(n in allowed for n in (model.name, *model.aliases))


class ModelCatalog:
    """Every configured model; :meth:`for_key` is the part of it one key may see."""

    def __init__(self, models: Sequence[ModelSettings]) -> None:
        self.models = tuple(models)
        self.allowed: frozenset[str] | None = None
        #: Further lists a model must also be in (a key's team's models).
        self.also: tuple[frozenset[str], ...] = ()
        self._by_name: dict[str, ModelSettings] = {}
        self._patterns: list[tuple[re.Pattern[str], ModelSettings]] = []
        self._templates: dict[str, PromptTemplate] = {}
        for model in self.models:
            for name in (model.name, *model.aliases):
                if name != model.name and is_pattern(name):
                    self._patterns.append((re.compile(fnmatch.translate(name)), model))
                else:
                    self._by_name[name] = model
            try:
                self._templates[model.name] = template_for(model.template, model.template_jinja)
            except ValueError as exc:
                raise ValueError(f"models[{model.name}].template: {exc}") from None

    def resolve(self, name: str, allowed: Collection[str] | None = None) -> ModelSettings:
        """The model called ``name``; one outside ``allowed`` looks exactly like an unknown one."""
        model = self._by_name.get(name) or self._match(name)
        if allowed is None:
            allowed = self.allowed
        if model is None or not all(allows(a, model) for a in (allowed, *self.also)):
            raise NotFound(
                f"The model '{name}' does not exist or you do not have access to it.",
                param="model",
                code="model_not_found",
            )
        return model

    def _match(self, name: str) -> ModelSettings | None:
        if len(name) > MAX_PATTERN_INPUT:
            return None
        return next((model for regex, model in self._patterns if regex.match(name)), None)

    def for_key(self, allowed: Collection[str] | None) -> ModelCatalog:
        """This catalog as a key allowed ``allowed`` sees it: the other models do not exist."""
        if allowed is None:
            return self
        view = copy.copy(self)  # shares the name and template tables
        view.allowed = frozenset(allowed)
        view.models = tuple(m for m in self.models if allows(view.allowed, m))
        return view

    def narrowed(self, allowed: Collection[str] | None) -> ModelCatalog:
        """This view, with a model also needing to be in ``allowed`` (a key's team's list)."""
        if allowed is None:
            return self
        view = copy.copy(self)
        names = frozenset(allowed)
        view.also = (*self.also, names)
        view.models = tuple(m for m in self.models if allows(names, m))
        return view

    def template(self, model: ModelSettings) -> PromptTemplate:
        return self._templates[model.name]

    def names(self) -> list[str]:
        """Every exact name and alias this catalog shows (patterns are not names)."""
        return [
            name
            for model in self.models
            for name in (model.name, *model.aliases)
            if name == model.name or not is_pattern(name)
        ]
