"""The models clients may name: canonical names, aliases, and each model's prompt template.

An alias with ``*``, ``?`` or ``[`` is a glob pattern (``claude-*``), so an operator can send
every model name a tool may ask for to one served model. Exact names always win; patterns
are tried in config order, only on names of a sane length.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence

from gateway.config import ModelSettings
from gateway.engine.prompts import PromptTemplate, template_for
from gateway.errors import NotFound

#: Longer names are never matched against patterns (no client sends one; bounds the work).
MAX_PATTERN_INPUT = 256


def is_pattern(alias: str) -> bool:
    return any(c in alias for c in "*?[")


class ModelCatalog:
    def __init__(self, models: Sequence[ModelSettings]) -> None:
        self.models = tuple(models)
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

    def resolve(self, name: str, allowed: tuple[str, ...] | None = None) -> ModelSettings:
        """The model called ``name``; one outside ``allowed`` looks exactly like an unknown one."""
        model = self._by_name.get(name) or self._match(name)
        if model is None or (allowed is not None and model.name not in allowed):
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

    def template(self, model: ModelSettings) -> PromptTemplate:
        return self._templates[model.name]

    def names(self) -> list[str]:
        """Every exact name and alias (patterns are not names)."""
        return list(self._by_name)
