"""Secrets masked in text: the config's tokens and keys, and ``Bearer <value>``.

Below every other layer but config: the upstream client masks what the jobs API says with it
before a client or a log sees it, and logging installs it as a filter on its handler
(:func:`gateway.ops.logs.configure_logging`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

from gateway.config import Settings

MASK = "***"
_BEARER = re.compile(r"(?i:\b(?P<bearer>bearer)(?P<space>\s+)[A-Za-z0-9\-._~+/]+=*)")
#: Attributes every LogRecord has; anything else on a record is a structured field.
RECORD_ATTRS = frozenset(vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)))
RECORD_ATTRS |= {"message", "asctime", "taskName"}


class SecretRedactor(logging.Filter):
    """Masks ``Bearer <value>`` and every registered secret in a record before it is written.

    It rewrites the record itself (message, arguments, string fields, traceback text), so every
    formatter downstream sees the masked version. Install it on a handler, not a logger: a
    logger's filters do not see records propagated from child loggers.
    """

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] = _BEARER  # the secrets and Bearer values, one pass

    def register_secret(self, secret: str | None) -> None:
        """Mask ``secret`` from now on; empty values are ignored."""
        if secret and secret not in self._secrets:
            self._secrets.add(secret)
            # Longest first, so a secret containing another is masked whole; one pattern with
            # the Bearer values, so a string is scanned once (a log line has a dozen).
            ordered = sorted(self._secrets, key=len, reverse=True)
            secrets = "|".join(re.escape(s) for s in ordered)
            self._pattern = re.compile(f"(?P<secret>{secrets})|{_BEARER.pattern}")

    def register_secrets(self, secrets: Iterable[str | None]) -> None:
        for secret in secrets:
            self.register_secret(secret)

    def redact(self, text: str) -> str:
        return self._pattern.sub(_masked, text)

    def _redact_value(self, value: Any) -> Any:
        kind = type(value)
        if kind is str:
            return self._pattern.sub(_masked, value)
        if value is None or kind is int or kind is float or kind is bool:
            return value  # most fields of an access line: nothing to mask
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, list | tuple):
            return type(value)(self._redact_value(v) for v in value)
        if isinstance(value, dict):
            return {k: self._redact_value(v) for k, v in value.items()}
        return value

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # bad %-arguments: keep the line, show what was given
            message = f"{record.msg} {record.args!r}"
        record.msg = self.redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        fields = vars(record)
        for name, value in list(fields.items()):
            if name not in RECORD_ATTRS:
                fields[name] = self._redact_value(value)
        return True


def _masked(match: re.Match[str]) -> str:
    """A registered secret, or the value of ``Bearer <value>``, as :data:`MASK`."""
    if match["bearer"] is None:
        return MASK
    return match["bearer"] + match["space"] + MASK


def config_secrets(settings: Settings) -> list[str | None]:
    """Every secret a config holds in plaintext: masked in logs and in upstream error text."""
    return [
        *(k.upstream_token for k in settings.keys),
        *(k.key for k in settings.keys),
        *(a.upstream_token for a in settings.accounts),
        *(k.key for k in settings.admin.keys),
        settings.admin.key,
        settings.emulator.token,
        settings.key_store.secret,
        settings.ollama.default_key,
    ]
