"""The models clients may name: canonical names, aliases, and each model's prompt template."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.config import ModelSettings
from gateway.engine.prompts import PromptTemplate, template_for
from gateway.errors import NotFound


class ModelCatalog:
    def __init__(self, models: Sequence[ModelSettings]) -> None:
        self.models = tuple(models)
        self._by_name: dict[str, ModelSettings] = {}
        self._templates: dict[str, PromptTemplate] = {}
        for model in self.models:
            for name in (model.name, *model.aliases):
                self._by_name[name] = model
            try:
                self._templates[model.name] = template_for(model.template, model.template_jinja)
            except ValueError as exc:
                raise ValueError(f"models[{model.name}].template: {exc}") from None

    def resolve(self, name: str, allowed: tuple[str, ...] | None = None) -> ModelSettings:
        """The model called ``name``; one outside ``allowed`` looks exactly like an unknown one."""
        model = self._by_name.get(name)
        if model is None or (allowed is not None and model.name not in allowed):
            raise NotFound(
                f"The model '{name}' does not exist or you do not have access to it.",
                param="model",
                code="model_not_found",
            )
        return model

    def template(self, model: ModelSettings) -> PromptTemplate:
        return self._templates[model.name]

    def names(self) -> list[str]:
        return list(self._by_name)
