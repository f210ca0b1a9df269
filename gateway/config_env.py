"""``${NAME}`` and ``${NAME:-default}`` in a config file: values from the environment.

Every unset variable is named in one error, so an operator fixes them all in one go.
"""

from __future__ import annotations

import os
import re
from typing import Any

_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(Exception):
    """The configuration cannot be used; the message names the bad field."""


def interpolate(text: str, environ: dict[str, str] | os._Environ[str]) -> str:
    """Replace ``${NAME}`` and ``${NAME:-default}``; an unset name without default is an error."""

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = environ.get(name)
        if value is None:
            if default is None:
                raise ConfigError(f"environment variable {name} is not set (used as ${{{name}}})")
            return default
        return value

    return _ENV_PATTERN.sub(replace, text)


def unset_variables(value: Any, environ: dict[str, str] | os._Environ[str]) -> list[str]:
    """Every ``${NAME}`` (without default) in parsed YAML whose variable is unset, in order."""
    if isinstance(value, str):
        return [
            m.group(1)
            for m in _ENV_PATTERN.finditer(value)
            if m.group(2) is None and m.group(1) not in environ
        ]
    children = value.values() if isinstance(value, dict) else value
    if isinstance(value, dict | list):
        return [name for child in children for name in unset_variables(child, environ)]
    return []


def interpolate_tree(value: Any, environ: dict[str, str] | os._Environ[str]) -> Any:
    """Interpolate every string in parsed YAML (so comments and YAML syntax are left alone).

    Every unset variable is named in one error, not one per run."""
    if unset := list(dict.fromkeys(unset_variables(value, environ))):
        if len(unset) == 1:
            name = unset[0]
            raise ConfigError(f"environment variable {name} is not set (used as ${{{name}}})")
        raise ConfigError(f"environment variables not set: {', '.join(unset)}")
    return _interpolated(value, environ)


def _interpolated(value: Any, environ: dict[str, str] | os._Environ[str]) -> Any:
    if isinstance(value, str):
        return interpolate(value, environ)
    if isinstance(value, list):
        return [_interpolated(v, environ) for v in value]
    if isinstance(value, dict):
        return {k: _interpolated(v, environ) for k, v in value.items()}
    return value
